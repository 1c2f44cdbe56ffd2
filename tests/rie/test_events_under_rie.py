"""Every events/ file under AWS's Runtime Interface Emulator, as `sam local invoke` runs it, against `make invoke`.

The functions come from `sam build`, their environment from SAM CLI's own code with the `--env-vars`
file `make dev` writes, their layers sit at /opt and their code at /var/task (a private mount
namespace), and each event is prepared as `make event` prepares it, against the local stack's moto
server and embedded upstream.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from local.aws import ACCESS_KEY
from local.event_prep import prepare_event
from local.invoke_cli import InvokeOutcome, run_invocation
from local.stack import LocalStack
from local.url_caller import url_caller
from tests.conftest import ROOT
from tests.helpers import event_table, sse_events, sse_text
from tests.rie.conftest import StartFunction, no_mount_leaked
from tests.rie.harness import RieFunction, RieResponse, sam_config

TABLE = event_table()
# Deletes run before the messages events: those must still work (prepare_event re-creates the conversation).
ORDER = sorted(TABLE, key=lambda name: (not name.startswith("stream-delete"), name))


@pytest.fixture(scope="module")
def containers(start_function: StartFunction, sam_env_file: Path) -> dict[str, RieFunction]:
    """One warm container per function, as `sam local start-lambda` keeps them (cold start tested below)."""
    return {name: start_function(name, sam_env_file) for name in ("StreamFunction", "SignFunction")}


def _prepared(stack: LocalStack, name: str) -> bytes:
    secrets = stack.secret_values()
    call = url_caller(stack.endpoints()["stream_url"])
    proxy = stack.container_url(stack.sw1_app["proxy"])  # as make event signs it: the container's upstream
    return prepare_event((ROOT / "events" / name).read_bytes(), secrets, proxy, call)


def _content_type(headers: dict[str, str]) -> str:
    return next((v for k, v in headers.items() if k.lower() == "content-type"), "")


def _comparable(headers: dict[str, str], body: bytes) -> Any:
    """What must agree between two runs of the same event (ids, times and turn counts may differ)."""
    content_type = _content_type(headers)
    if not body:  # 204: nothing to resume
        return "empty", content_type
    if content_type.startswith("text/event-stream"):
        assert body.endswith(b"data: [DONE]\n\n"), body[-200:]
        return "sse", re.sub(r"Echo \(\d+ messages\)", "Echo (n messages)", sse_text(body))
    doc = json.loads(body)
    if "error" in doc:
        return "error", doc
    if doc.get("object") == "chat.completion":
        return "completion", re.sub(
            r"Echo \(\d+ messages\)", "Echo (n messages)", doc["choices"][0]["message"]["content"]
        )
    if "url" in doc:  # a Sign function answer: same shape, same Stream URL
        return "signed", sorted(doc), doc["base_url"]
    if doc.get("object") == "list":
        return "list", sorted(doc), [sorted(item) for item in doc["data"][:1]]
    return "other", doc


@pytest.mark.parametrize("name", ORDER)
def test_event_under_the_rie_gives_its_status_and_matches_make_invoke(
    name: str, containers: dict[str, RieFunction], rie_stack: LocalStack
) -> None:
    function, status = TABLE[name]
    container = containers[function]
    answer = container.invoke(_prepared(rie_stack, name))
    assert answer.rie_status == 200 and answer.error is None, (answer.raw[:500], container.logs()[-3000:])
    assert answer.status == status, (answer.body[:500], container.logs()[-3000:])
    assert answer.streamed == (function == "StreamFunction")  # the Stream function answers with a prelude

    local: InvokeOutcome = run_invocation(rie_stack.pools[function], _prepared(rie_stack, name), timeout=60)
    assert local.error_type is None and local.status == status, local.body[:500]
    assert _content_type(answer.headers) == _content_type(local.headers)
    assert _comparable(answer.headers, answer.body) == _comparable(local.headers, local.body)


def test_a_cold_container_per_invoke_as_sam_local_invoke_runs_it(
    start_function: StartFunction, sam_env_file: Path, rie_stack: LocalStack
) -> None:
    """`sam local invoke` starts a fresh container for each invoke: init and the first answer, nothing warm."""
    container = start_function("StreamFunction", sam_env_file)
    answer = container.invoke(_prepared(rie_stack, "stream-chat-valid.json"))
    container.stop()
    assert answer.status == 200 and answer.streamed
    assert sse_text(answer.body).startswith("Echo (")
    assert [e for e in sse_events(answer.body) if b'"error"' in e] == []
    logs = container.logs()
    assert "Init Duration" in logs and "Traceback" not in logs
    assert no_mount_leaked()  # the sandbox's /var/task never reached the host's mount table


def test_the_line_make_dev_prints_reaches_the_stack_from_its_container(
    start_function: StartFunction, sam_env_file: Path, rie_stack: LocalStack
) -> None:
    """The printed `sam local invoke` line, flag for flag: the network is what SAM CLI makes of its flags."""
    from local.__main__ import sam_invoke_command

    host = rie_stack.options.container_host or ""
    line = sam_invoke_command("StreamFunction", "events/stream-chat-valid.json", sam_env_file, host)
    args = shlex.split(line.split(" | ", 1)[1])
    invoke = args[args.index("invoke") + 1 :]
    assert invoke[:3] == ["StreamFunction", "-e", "-"] and invoke[3:5] == ["--env-vars", str(sam_env_file)]
    container = start_function("StreamFunction", sam_env_file, network_flags=invoke[5:])
    assert container.isolated  # SAM CLI gives it Docker's bridge: 127.0.0.1 is the container itself
    answer = container.invoke(_prepared(rie_stack, "stream-chat-valid.json"))
    assert answer.status == 200, (answer.body[:500], container.logs()[-3000:])
    assert sse_text(answer.body).startswith("Echo (")


def test_sam_cli_ignores_docker_network_host(built: Path) -> None:
    """Why the line has no `--docker-network host`: SAM CLI 1.170 skips "host" (it only connects other
    networks; aws/aws-sam-cli#4236), so the container still gets the bridge. If this fails, SAM gives host
    networking again and 127.0.0.1 in sam-env.json would work.
    """
    config = sam_config(built / "build" / "template.yaml", "StreamFunction", network_flags=["--docker-network", "host"])
    assert config["network"]["mode"] == "bridge" and config["network"]["connected"] == []


def test_the_environment_is_samcli_s_own(containers: dict[str, RieFunction], rie_stack: LocalStack) -> None:
    """What SAM computed: template values overridden by the env file, layers at /opt, code at /var/task."""
    stream, sign = containers["StreamFunction"].config, containers["SignFunction"].config
    assert stream["env"]["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/sigstream-runtime"
    assert stream["env"]["SIGSTREAM_TABLE"] == rie_stack.tables["HistoryTable"]
    assert stream["env"]["AWS_ENDPOINT_URL"] == rie_stack.container_url(rie_stack.moto.endpoint)  # type: ignore[union-attr]
    assert stream["network"]["mode"] == "bridge" and containers["StreamFunction"].isolated  # SAM's own answer
    assert stream["env"]["AWS_SAM_LOCAL"] == "true" and stream["env"]["AWS_ACCESS_KEY_ID"] == ACCESS_KEY
    assert sign["env"]["SIGSTREAM_STREAM_URL"] == rie_stack.endpoints()["stream_url"]
    assert stream["entrypoint"] == ["/var/rapid/aws-lambda-rie", "--log-level", "error"]
    assert [Path(p).name for p in stream["layers"]] == ["streaming-runtime", "core", "DependenciesLayer"]
    assert stream["architecture"] == "arm64" and stream["runtime"] == "python3.12"


def test_rie_response_parsing_handles_every_shape() -> None:
    streamed = RieResponse.parse(200, b'{"statusCode":201,"headers":{"a":"b"}}' + b"\x00" * 8 + b"body")
    assert (streamed.status, streamed.headers, streamed.body, streamed.streamed) == (201, {"a": "b"}, b"body", True)
    buffered = RieResponse.parse(200, json.dumps({"statusCode": 404, "body": "{}"}).encode())
    assert (buffered.status, buffered.body, buffered.streamed) == (404, b"{}", False)
    failed = RieResponse.parse(200, b'{"errorType": "KeyError", "errorMessage": "x"}')
    assert failed.status == 502 and failed.error == {"errorType": "KeyError", "errorMessage": "x"}
    crashed = RieResponse.parse(502, b"")
    assert crashed.status == 502 and crashed.error is not None
