"""`sam local invoke` without (or with a wrong) env file: the functions fail loudly, with the cause in the log.

The client only ever sees the public error (503 / 502, no resource names); the log names the secret,
table or endpoint and what was wrong with it. The two functions treat a broken signing-keys secret alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.event_prep import prepare_event
from local.stack import LocalStack
from local.url_caller import url_caller
from tests.conftest import ROOT
from tests.rie.conftest import StartFunction, write_env_file
from tests.rie.harness import RieFunction, RieResponse, free_port


def _event(stack: LocalStack, name: str) -> bytes:
    call = url_caller(stack.endpoints()["stream_url"])
    return prepare_event((ROOT / "events" / name).read_bytes(), stack.secret_values(), stack.sw1_app["proxy"], call)


def _refused_quietly(answer: RieResponse, status: int, code: str, *hidden: str) -> None:
    """The public answer: the status and code, and nothing of the cause."""
    assert answer.status == status, answer.raw[:500]
    assert json.loads(answer.body)["error"]["code"] == code
    for word in hidden:
        assert word not in answer.body.decode(), answer.body


def _log_lines(container: RieFunction, message: str) -> list[dict[str, object]]:
    found = []
    for line in container.logs().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("message") == message:
                found.append(doc)
    return found


def test_stream_function_names_a_secret_that_does_not_exist(
    start_function: StartFunction, rie_stack: LocalStack, tmp_path: Path
) -> None:
    """Only the endpoint set: the secrets are the template's logical ids, as SAM resolves `!Ref` locally."""
    endpoint = rie_stack.container_url(rie_stack.moto.endpoint)  # type: ignore[union-attr]
    env = write_env_file(tmp_path, {"Parameters": {"AWS_ENDPOINT_URL": endpoint}})
    container = start_function("StreamFunction", env)
    answer = container.invoke(_event(rie_stack, "stream-chat-valid.json"))
    _refused_quietly(answer, 503, "service_unavailable", "SigningKeysSecret", "ResourceNotFound")
    (failure,) = _log_lines(container, "request failed")
    assert "'SigningKeysSecret'" in str(failure["cause"]) and "ResourceNotFoundException" in str(failure["cause"])
    assert endpoint in str(failure["cause"])


def test_stream_function_names_a_table_that_does_not_exist(
    start_function: StartFunction, rie_stack: LocalStack, sam_env_file: Path, tmp_path: Path
) -> None:
    doc = json.loads(sam_env_file.read_text())
    doc["StreamFunction"]["SIGSTREAM_TABLE"] = "HistoryTable"  # the logical id, as SAM leaves `!Ref HistoryTable`
    container = start_function("StreamFunction", write_env_file(tmp_path, doc))
    for name in ("stream-list-conversations-valid.json", "stream-chat-json-valid.json"):
        answer = container.invoke(_event(rie_stack, name))
        _refused_quietly(answer, 503, "service_unavailable", "HistoryTable", "ResourceNotFound")
    failures = _log_lines(container, "request failed")
    assert len(failures) == 2
    assert all(f["table"] == "HistoryTable" and "ResourceNotFoundException" in str(f["cause"]) for f in failures)


def test_unreachable_aws_is_reported_with_the_endpoint_by_both_functions(
    start_function: StartFunction, rie_stack: LocalStack, sam_env_file: Path, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    doc = json.loads(sam_env_file.read_text())
    for function in ("StreamFunction", "SignFunction"):
        doc[function]["AWS_ENDPOINT_URL"] = dead
    env = write_env_file(tmp_path, doc)
    stream, sign = start_function("StreamFunction", env), start_function("SignFunction", env)
    _refused_quietly(
        stream.invoke(_event(rie_stack, "stream-chat-valid.json")), 503, "service_unavailable", "127.0.0.1"
    )
    _refused_quietly(sign.invoke(_event(rie_stack, "sign-chat-url.json")), 503, "service_unavailable", "127.0.0.1")
    for container in (stream, sign):
        (failure,) = _log_lines(container, "request failed")
        assert "ConnectionError" in str(failure["cause"]) and dead in str(failure["cause"])


def test_sign_function_refuses_to_start_without_the_stream_url(
    start_function: StartFunction, rie_stack: LocalStack
) -> None:
    """No env file: SAM passes "" for `!GetAtt StreamFunctionUrl.FunctionUrl`; relative URLs are never issued."""
    container = start_function("SignFunction")
    assert container.config["env"]["SIGSTREAM_STREAM_URL"] == ""
    answer = container.invoke(_event(rie_stack, "sign-chat-url.json"))
    assert answer.status == 502 and answer.error is not None  # an init failure: a Function URL answers 502
    assert answer.error["errorType"] == "ConfigError"
    assert "SIGSTREAM_STREAM_URL is not set" in str(answer.error["errorMessage"])
    (line,) = _log_lines(container, "configuration error: the Sign function cannot start")
    assert line["cause"] == "SIGSTREAM_STREAM_URL is not set"
    assert '"url"' not in answer.raw.decode()


@pytest.mark.parametrize("value", ["not json", '{"active": "k9", "k1": "short"}'])
def test_a_broken_signing_keys_secret_is_the_same_503_in_both_functions(
    start_function: StartFunction, rie_stack: LocalStack, sam_env_file: Path, tmp_path: Path, value: str
) -> None:
    """Both read it through the same secret cache: the same status and code, the cause in both logs."""
    assert rie_stack.moto is not None
    name = f"broken-keys-{abs(hash(value))}"
    arn = rie_stack.moto.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]
    doc = json.loads(sam_env_file.read_text())
    for function in ("StreamFunction", "SignFunction"):
        doc[function]["SIGSTREAM_SIGNING_KEYS_SECRET"] = arn
    env = write_env_file(tmp_path, doc)
    stream, sign = start_function("StreamFunction", env), start_function("SignFunction", env)
    answers = {
        "stream": stream.invoke(_event(rie_stack, "stream-list-conversations-valid.json")),
        "sign": sign.invoke(_event(rie_stack, "sign-chat-url.json")),
    }
    for answer in answers.values():
        _refused_quietly(answer, 503, "service_unavailable", name, "malformed")
    assert json.loads(answers["stream"].body) == json.loads(answers["sign"].body)
    for container in (stream, sign):
        (failure,) = _log_lines(container, "request failed")
        assert name in str(failure["cause"]) and "signing keys secret" in str(failure["cause"])
