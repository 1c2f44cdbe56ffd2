"""Rotating the URL signing keys as docs/deploy.md says, with the Sign and Stream caches refreshing apart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from local.url_event import HttpRequest, build_event
from sigstream.core.settings import parse_signing_keys
from sigstream.core.url_issuer import SignSpec, issue_url, random_id

K1, K2 = "k1-" + "a" * 40, "k2-" + "b" * 40
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    yield port
    server.stop()


def _aws(port: int, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",  # pragma: allowlist secret
    )


@pytest.fixture
def rotation(moto_port: int) -> Iterator[tuple[Any, Any]]:
    """(a Stream app whose caches are warm with k1 only, the Secrets Manager client that rotates)."""
    from stream_app.app import build_app

    ddb, sm = _aws(moto_port, "dynamodb"), _aws(moto_port, "secretsmanager")
    suffix = random_id("")[:8].replace("-", "x").replace("_", "y")
    table, secret = f"t{suffix}", f"signing-{suffix}"
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        GlobalSecondaryIndexes=[  # as template.yaml declares it
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    sm.create_secret(Name=secret, SecretString=json.dumps({"active": "k1", "k1": K1}))
    sm.create_secret(Name=f"provider-{suffix}", SecretString="sk-test")  # pragma: allowlist secret
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "SIGSTREAM_TABLE": table,
        "SIGSTREAM_SIGNING_KEYS_SECRET": secret,
        "SIGSTREAM_PROVIDER_KEY_SECRET": f"provider-{suffix}",
        "SIGSTREAM_UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    app = build_app(env, time.time)
    assert _list(app, _signed(json.dumps({"active": "k1", "k1": K1})))[0] == 200  # the Stream cache holds k1 only
    yield app, (sm, secret)


def _signed(secret_text: str, kid: str | None = None) -> str:
    keys = parse_signing_keys(secret_text)
    if kid is not None:
        keys = type(keys)(kid, {kid: b"x" * 40, **keys.keys})
    doc = issue_url(
        SignSpec(subject="user-1", method="GET", path="/v1/conversations"),
        keys,
        "https://stream.example",
        now=int(time.time()),
        max_lifetime=3600,
        new_id=random_id,
    )
    return str(urlsplit(doc["url"]).query)


def _list(app: Any, query: str) -> tuple[int, bytes]:
    event = build_event(
        HttpRequest("GET", "/v1/conversations", query, [], b"", "127.0.0.1"),
        url_id="u",
        region="us-east-1",
        request_id="r",
        now=time.time(),
        iam=None,
    )
    result = app.handle(event)
    return result.status, b"".join(result.body)


def test_a_url_signed_with_the_key_just_activated_verifies_before_the_stream_cache_expires(
    rotation: tuple[Any, Any],
) -> None:
    app, (sm, secret) = rotation
    rotated = json.dumps({"active": "k2", "k1": K1, "k2": K2})  # docs/deploy.md: add k2 and make it active
    sm.put_secret_value(SecretId=secret, SecretString=rotated)
    # The Sign function's cache refreshed first: it signs with k2 while the Stream function still holds k1 only.
    status, body = _list(app, _signed(rotated))
    assert status == 200, body
    assert _list(app, _signed(json.dumps({"active": "k1", "k1": K1})))[0] == 200  # k1 still verifies


def test_unknown_key_ids_refetch_the_keys_at_most_once_per_interval(rotation: tuple[Any, Any]) -> None:
    app, _ = rotation
    before = app.secrets.client.requests
    for _ in range(20):  # an attacker's made-up key ids cannot turn into a Secrets Manager call each
        status, body = _list(app, _signed(json.dumps({"active": "k1", "k1": K1}), kid="forged"))
        assert status in (401, 403) and b"invalid_signature" in body
    assert app.secrets.client.requests - before <= 1
