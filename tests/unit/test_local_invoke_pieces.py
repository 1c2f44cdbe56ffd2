"""Pure pieces behind `sam local invoke` support: settings, secret causes, in-band errors, the stock-runtime
fallback, event preparation, persistence snapshots, stable ports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from awslambdaric.lambda_runtime_marshaller import to_json

from local import persistence
from local.event_prep import conversation_needed, ensure_conversation, prepare_event
from local.relay import Relay
from local.resign import refresh_event
from local.stack import (
    Ports,
    default_container_host,
    docker_bridge_address,
    relays_needed,
    sam_invoke_flags,
)
from sigstream.adapters.aws_client import SECRETS_MANAGER, AwsServiceError, client_from_environment
from sigstream.adapters.secret_cache import SecretCache
from sigstream.core.errors import ServiceUnavailableError
from sigstream.core.settings import ConfigError, SignSettings, StreamSettings
from sigstream_runtime.response import BUFFERED_WARNING, StreamingResponse, in_band_error
from tests.conftest import ROOT

KEYS = json.dumps({"active": "k1", "k1": "0123456789abcdef0123"})


def test_sign_settings_refuse_a_missing_or_relative_stream_url() -> None:
    base = {"SIGSTREAM_SIGNING_KEYS_SECRET": "arn:keys"}  # pragma: allowlist secret
    with pytest.raises(ConfigError, match="SIGSTREAM_STREAM_URL is not set"):
        SignSettings.from_env(base)
    with pytest.raises(ConfigError, match="SIGSTREAM_STREAM_URL is not set"):
        SignSettings.from_env({**base, "SIGSTREAM_STREAM_URL": ""})  # what SAM passes for an unresolved GetAtt
    with pytest.raises(ConfigError, match="absolute http"):
        SignSettings.from_env({**base, "SIGSTREAM_STREAM_URL": "/v1"})
    settings = SignSettings.from_env({**base, "SIGSTREAM_STREAM_URL": "https://x.lambda-url.on.aws/"})
    assert (settings.max_url_lifetime, settings.secret_ttl_seconds) == (3600, 300)


def test_empty_values_count_as_unset_for_stream_settings_too() -> None:
    env = {
        "SIGSTREAM_TABLE": "t",
        "SIGSTREAM_SIGNING_KEYS_SECRET": "k",
        "SIGSTREAM_PROVIDER_KEY_SECRET": "p",
        "SIGSTREAM_UPSTREAM_BASE_URL": "https://api.example/v1",
        "SIGSTREAM_RATE_LIMIT_PER_MINUTE": "",
    }
    assert StreamSettings.from_env(env).rate_limit_per_minute == 20
    with pytest.raises(ConfigError, match="SIGSTREAM_TABLE is not set"):
        StreamSettings.from_env({**env, "SIGSTREAM_TABLE": ""})


class _Refusing:
    endpoint = "http://127.0.0.1:4566"

    def __init__(self, error: AwsServiceError | None = None, value: str = "") -> None:
        self.error, self.value = error, value

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.error:
            raise self.error
        return {"SecretString": self.value}


def test_secret_failures_carry_their_cause_for_the_log_but_not_the_client() -> None:
    cache = SecretCache(_Refusing(AwsServiceError("ResourceNotFoundException", "no such secret", 400)), ttl=60)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailableError) as caught:
        cache.get("SigningKeysSecret")
    error = caught.value
    assert error.cause() == (
        "GetSecretValue 'SigningKeysSecret' at http://127.0.0.1:4566 failed: ResourceNotFoundException: no such secret"
    )
    assert "SigningKeysSecret" not in json.dumps(error.body())


def test_a_malformed_signing_keys_secret_is_a_503_naming_the_secret() -> None:
    cache = SecretCache(_Refusing(value="not json"), ttl=60)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailableError) as caught:
        cache.signing_keys("arn:keys")
    assert caught.value.status == 503 and "arn:keys" in (caught.value.cause() or "")
    assert SecretCache(_Refusing(value=KEYS), ttl=60).signing_keys("k").active == "k1"  # type: ignore[arg-type]


def test_the_client_reads_the_sdks_standard_endpoint_names_and_ignores_empty_ones() -> None:
    keys = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "local-secret"}  # pragma: allowlist secret
    env = {**keys, "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_SECRETS_MANAGER": ""}
    assert client_from_environment(SECRETS_MANAGER, env).endpoint == "http://127.0.0.1:1"
    env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://127.0.0.1:2"  # pragma: allowlist secret
    assert client_from_environment(SECRETS_MANAGER, env).endpoint == "http://127.0.0.1:2"
    assert client_from_environment(SECRETS_MANAGER, keys).endpoint == "https://secretsmanager.us-east-1.amazonaws.com"


def test_in_band_error_only_for_event_streams_and_closes_a_half_written_event() -> None:
    assert in_band_error("text/plain", "Function.X", "r", b"") is None
    assert in_band_error("application/json", "Function.X", "r", b"") is None
    clean = in_band_error("text/event-stream; charset=utf-8", "Function.KeyError", "req-1", b"\n\n")
    assert clean is not None and clean.startswith(b"event: error\ndata: ") and clean.endswith(b"\n\n")
    assert json.loads(clean.split(b"data: ", 1)[1])["error"] == {
        "type": "Function.KeyError",
        "code": "function_error",
        "message": "the response failed after it started; see the function log",
        "request_id": "req-1",
    }
    assert in_band_error("text/event-stream", "Function.X", "r", b"ly").startswith(b"\n\nevent: error")  # type: ignore[union-attr]


def test_the_stock_runtime_marshals_a_streaming_response_as_a_buffered_url_response(capsys: Any) -> None:
    """awslambdaric's own encoder (simplejson, `_asdict`), as under `sam local invoke -d`."""
    response = StreamingResponse(
        iter(["data: a\n\n", b"data: b\n\n"]), 201, {"Content-Type": "text/event-stream"}, ["c=1"]
    )
    doc = json.loads(to_json(response))
    assert doc == {
        "statusCode": 201,
        "headers": {"content-type": "text/event-stream"},
        "cookies": ["c=1"],
        "body": "data: a\n\ndata: b\n\n",
        "isBase64Encoded": False,
    }
    assert BUFFERED_WARNING in capsys.readouterr().err
    binary = json.loads(to_json(StreamingResponse(iter([b"\xff\x00"]))))
    assert binary["isBase64Encoded"] and base64.b64decode(binary["body"]) == b"\xff\x00"


def test_the_stock_runtime_fallback_keeps_the_error_semantics() -> None:
    def fails_mid() -> Any:
        yield "data: one\n\n"
        raise RuntimeError("boom")

    doc = json.loads(to_json(StreamingResponse(fails_mid(), headers={"content-type": "text/event-stream"})))
    assert doc["body"].startswith("data: one\n\nevent: error\ndata: ")

    def fails_first() -> Any:
        raise ValueError("before")
        yield ""  # pragma: no cover

    with pytest.raises(Exception, match="before"):
        to_json(StreamingResponse(fails_first()))

    async def words() -> Any:
        for word in ("a", "b"):
            yield word

    assert json.loads(to_json(StreamingResponse(words(), headers={"content-type": "text/plain"})))["body"] == "ab"

    async def inside_a_running_loop() -> str:
        return str(to_json(StreamingResponse(words(), headers={"content-type": "text/plain"})))

    # On a thread of its own: the pytest session's main thread may already run a loop (Playwright's).
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(inside_a_running_loop())))
    runner.start()
    runner.join()
    assert json.loads(result[0])["body"] == "ab"

    async def fails_async() -> Any:
        yield "data: one\n\n"
        raise RuntimeError("async boom")

    doc = json.loads(to_json(StreamingResponse(fails_async(), headers={"content-type": "text/event-stream"})))
    assert doc["body"].startswith("data: one\n\nevent: error\ndata: ")


def _event(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "events" / name).read_text()))


def test_only_valid_messages_and_delete_events_need_their_conversation() -> None:
    assert conversation_needed(_event("stream-list-messages-valid.json")) == ("user-42", "conv_exampleConversation01")
    assert conversation_needed(_event("stream-delete-conversation-valid.json")) == (
        "user-42",
        "conv_exampleConversation01",
    )
    for name in ("stream-list-messages-expired.json", "stream-chat-valid.json", "stream-list-conversations-valid.json"):
        assert conversation_needed(_event(name)) is None


def test_ensure_conversation_creates_it_once_through_the_caller() -> None:
    calls: list[tuple[str, str]] = []
    existing: set[str] = set()

    def call(method: str, path: str, query: str, body: bytes) -> int:
        calls.append((method, path))
        if method == "POST":
            existing.add(dict(parse_qsl(query))["cid"])
            return 200
        return 200 if "conv_exampleOther000001" in existing else 404

    assert ensure_conversation("user-1", "conv_exampleOther000001", KEYS, call, now=1_800_000_000) is True
    assert ensure_conversation("user-1", "conv_exampleOther000001", KEYS, call, now=1_800_000_000) is False
    assert calls == [
        ("GET", "/v1/conversations/conv_exampleOther000001/messages"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/conversations/conv_exampleOther000001/messages"),
    ]
    fresh = json.loads(
        prepare_event(json.dumps(_event("stream-list-messages-valid.json")).encode(), {"signing-keys": KEYS}, "", call)
    )
    assert "sig=local-resign" not in fresh["rawQueryString"]


def test_resigning_keeps_request_parameters_and_the_variants_differ() -> None:
    raw = json.dumps(_event("stream-list-conversations-malformed.json")).encode()
    fresh = json.loads(refresh_event(raw, {"signing-keys": KEYS}, "", now=1_800_000_000))
    params = dict(parse_qsl(fresh["rawQueryString"]))
    assert params["limit"] == "0" and params["nbf"] == "1800000000" and fresh["queryStringParameters"]["limit"] == "0"
    expired = json.loads(
        refresh_event(
            json.dumps(_event("stream-chat-expired.json")).encode(), {"signing-keys": KEYS}, "", now=1_800_000_000
        )
    )
    assert dict(parse_qsl(expired["rawQueryString"]))["exp"] == str(1_800_000_000 - 3600 + 300)


def test_ports_from_one_base() -> None:
    ports = Ports(8000)
    assert (ports.web, ports.aws, ports.upstream, ports.function_url(0), ports.function_url(1)) == (
        8000,
        8001,
        8002,
        8003,
        8004,
    )


def test_snapshot_round_trip_and_unreadable_snapshots_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "data" / "moto-state.json"
    persistence.save_snapshot(path, {"HistoryTable": [{"pk": {"S": "a"}}]}, {"signing-keys": KEYS, "other": "x"})
    tables, secrets = persistence.read_snapshot(path)
    assert tables == {"HistoryTable": [{"pk": {"S": "a"}}]} and secrets == {"signing-keys": KEYS}
    for unreadable in ("{broken", '{"version": 99, "tables": {"HistoryTable": []}}'):
        path.write_text(unreadable)
        assert persistence.read_snapshot(path) == ({}, {})
        # Kept aside, not overwritten by the empty snapshot the next stop saves.
        assert not path.exists() and persistence.set_aside_path(path).read_text() == unreadable
    assert persistence.read_snapshot(tmp_path / "missing.json") == ({}, {})


def test_the_container_host_decides_listeners_and_sam_flags() -> None:
    """SAM CLI's containers sit on Docker's bridge: an address of this machine (docker0's) needs relays,
    host.docker.internal needs SAM's --add-host (Docker Engine does not define the name), loopback neither.
    """
    assert relays_needed("172.17.0.1") and relays_needed("127.0.0.2")
    assert not relays_needed("127.0.0.1") and not relays_needed("host.docker.internal") and not relays_needed(None)
    assert sam_invoke_flags("host.docker.internal") == ["--add-host", "host.docker.internal:host-gateway"]
    assert sam_invoke_flags("172.17.0.1") == []
    assert default_container_host() in (docker_bridge_address(), "host.docker.internal")


def test_a_relay_pipes_both_ways_and_stops_at_once(tmp_path: Path) -> None:
    """TCP -> Unix socket -> TCP, as make dev (bridge address) and tests/rie (namespace edge) chain them."""
    import socket
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        path = str(tmp_path / "r.sock")
        inner = Relay(("unix", path), ("tcp", "127.0.0.1", port)).start()
        outer = Relay(("tcp", "127.0.0.2", port), ("unix", path)).start()
        with socket.create_connection(("127.0.0.2", port), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong" * 1000)
                conn.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := client.recv(65536):
                    received += chunk
                assert received == b"pong" * 1000  # a half-close passes through
        started = time.monotonic()
        outer.stop()
        inner.stop()
        assert time.monotonic() - started < 1
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.2", port)) != 0
        assert not Path(path).exists()
