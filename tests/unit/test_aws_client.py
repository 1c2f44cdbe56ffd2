"""The hand-written AWS client against botocore and real local servers: SigV4, endpoints, credentials, retries."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from sigstream.adapters.aws_client import (
    DYNAMODB,
    SECRETS_MANAGER,
    AwsJsonClient,
    AwsServiceError,
    RetryQuota,
    client_from_environment,
)
from sigstream.adapters.aws_credentials import (
    ContainerCredentials,
    Credentials,
    CredentialsError,
    credentials_from_environment,
)
from sigstream.adapters.tls import client_context
from sigstream.core.aws_endpoints import partition, signing_host
from sigstream.core.settings import ConfigError
from sigstream.core.sigv4 import sign_headers

BLACKLISTED = {"expect", "user-agent", "x-amzn-trace-id", "connection", "keep-alive", "te", "baggage", "traceparent"}


def botocore_authorization(
    method: str, url: str, headers: dict[str, str], body: bytes, creds: Credentials, region: str, service: str
) -> str:
    """The Authorization header botocore's SigV4Auth computes for the same request at the same instant."""
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(method=method, url=url, data=body, headers={k: headers[k] for k in signed})
    signed_at = dt.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        SigV4Auth(BotoCredentials(creds.access_key, creds.secret_key, creds.session_token), service, region).add_auth(
            request
        )
    return str(request.headers["Authorization"])


_segment = st.text(alphabet="abcXYZ019-_.~%20:@!$'()*+,;=", min_size=0, max_size=8)
_query_part = st.text(alphabet="abcXYZ019-_.~%2F", min_size=0, max_size=6)
_header_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda n: n not in BLACKLISTED and n not in {"host", "authorization", "x-amz-date"} and not n.startswith("-")
)
_header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    host=st.sampled_from(
        ["dynamodb.us-east-1.amazonaws.com", "127.0.0.1:4566", "secretsmanager.cn-north-1.amazonaws.com.cn"]
    ),
    segments=st.lists(_segment, max_size=5),
    query=st.lists(st.tuples(_query_part, _query_part), max_size=4),
    headers=st.dictionaries(_header_name, _header_value, max_size=5),
    body=st.binary(max_size=200),
    token=st.one_of(st.none(), st.text(alphabet="abcXYZ019/+=", min_size=1, max_size=30)),
    region=st.sampled_from(["us-east-1", "cn-north-1", "us-gov-west-1", "eu-central-1"]),
    service=st.sampled_from(["dynamodb", "secretsmanager", "lambda"]),
    when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
)
def test_our_sigv4_equals_botocore_for_random_requests(
    method: str,
    host: str,
    segments: list[str],
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    region: str,
    service: str,
    when: dt.datetime,
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    raw_path = "/" + "/".join(segments)
    raw_query = "&".join(f"{k}={v}" for k, v in query)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    ours = sign_headers(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=token,
        method=method,
        host=host,
        raw_path=raw_path,
        raw_query=raw_query,
        body=body,
        headers=headers,
        amz_date=amz_date,
        region=region,
        service=service,
    )
    url = f"https://{host}{raw_path}" + (f"?{raw_query}" if raw_query else "")
    assert ours["authorization"] == botocore_authorization(method, url, ours, body, creds, region, service)


def test_every_region_botocore_knows_gets_its_partition_dns_suffix() -> None:
    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
    checked = 0
    for part in data["partitions"]:
        for region in part["regions"]:
            if region.startswith("aws"):
                continue  # pseudo-regions such as aws-global, aws-cn-global
            assert partition(region) == (part["id"], part["outputs"]["dnsSuffix"]), region
            checked += 1
    assert checked > 30
    assert client_from_environment(DYNAMODB, _env(AWS_REGION="cn-north-1")).endpoint == (
        "https://dynamodb.cn-north-1.amazonaws.com.cn"
    )
    assert client_from_environment(SECRETS_MANAGER, _env(AWS_REGION="us-gov-west-1")).endpoint == (
        "https://secretsmanager.us-gov-west-1.amazonaws.com"
    )


def _env(**extra: str) -> dict[str, str]:
    return {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "secret",  # pragma: allowlist secret
        **extra,
    }


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"},
        {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:5001",  # pragma: allowlist secret
            "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        },
        {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000"},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
    ],
)
def test_endpoint_variables_are_read_as_boto3_reads_them(
    variables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in _env(**variables).items():
        monkeypatch.setenv(name, value)
    for protocol, service in ((SECRETS_MANAGER, "secretsmanager"), (DYNAMODB, "dynamodb")):
        ours = client_from_environment(protocol, _env(**variables)).endpoint
        theirs = boto3.session.Session().client(service).meta.endpoint_url
        assert ours.rstrip("/") == theirs.rstrip("/"), (service, variables)


def test_the_host_is_signed_as_http_client_sends_it() -> None:
    assert signing_host("https://dynamodb.us-east-1.amazonaws.com:443") == "dynamodb.us-east-1.amazonaws.com"
    assert signing_host("http://127.0.0.1:80/") == "127.0.0.1"
    assert signing_host("http://127.0.0.1:4566") == "127.0.0.1:4566"
    assert signing_host("http://[::1]:4566") == "[::1]:4566"


def test_no_credentials_is_a_loud_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"no AWS credentials.*AWS_ACCESS_KEY_ID.*AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        client_from_environment(DYNAMODB, {"AWS_REGION": "us-east-1"})
    with pytest.raises(ConfigError, match="set together"):
        credentials_from_environment({"AWS_ACCESS_KEY_ID": "AKID"})
    with pytest.raises(ConfigError, match="FULL_URI must be https"):
        credentials_from_environment({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.169.254/creds"})


# --- real local servers: a container credentials endpoint and a JSON-protocol service -----------------------


class Servers:
    """The credentials endpoint's script and log, and what the service received."""

    def __init__(self) -> None:
        self.creds: list[dict[str, Any]] = []  # one document per fetch (the last repeats); {} = HTTP 500
        self.auth_seen: list[str | None] = []
        self.service_status: list[int] = [200]
        self.service_seen: list[dict[str, Any]] = []


class CredsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # the container credentials endpoint
        state: Servers = self.server.state
        state.auth_seen.append(self.headers.get("Authorization"))
        doc = state.creds.pop(0) if len(state.creds) > 1 else state.creds[0]
        self._send(200 if doc else 500, doc or {"message": "unavailable"})

    def do_POST(self) -> None:  # a JSON-protocol AWS service
        state: Servers = self.server.state
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        state.service_seen.append({"headers": headers, "body": body})
        status = state.service_status.pop(0) if len(state.service_status) > 1 else state.service_status[0]
        if status == 200:
            self._send(200, {"SecretString": "s3cret"})  # pragma: allowlist secret
        else:
            self._send(status, {"__type": "com.amazonaws#InternalFailure", "message": "down"})


@pytest.fixture()
def servers() -> Iterator[tuple[str, Servers]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CredsHandler)
    httpd.daemon_threads = True
    httpd.state = Servers()  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def _creds_doc(key: str, expires_in: float) -> dict[str, str]:
    expiry = dt.datetime.fromtimestamp(time.time() + expires_in, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"AccessKeyId": key, "SecretAccessKey": f"secret-{key}", "Token": f"token-{key}", "Expiration": expiry}


def test_container_credentials_sign_requests_with_the_endpoints_token(servers: tuple[str, Servers]) -> None:
    base, state = servers
    state.creds = [_creds_doc("ASIAONE", 3600)]
    env = {
        "AWS_REGION": "us-east-1",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": base + "/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "agent-token",
        "AWS_ENDPOINT_URL": base,
    }
    client = client_from_environment(SECRETS_MANAGER, env)
    assert client.call("GetSecretValue", {"SecretId": "x"}) == {"SecretString": "s3cret"}
    assert client.call("GetSecretValue", {"SecretId": "x"}) == {"SecretString": "s3cret"}
    assert state.auth_seen == ["agent-token"]  # fetched once, cached while valid
    for seen in state.service_seen:
        headers = seen["headers"]
        assert headers["x-amz-security-token"] == "token-ASIAONE"
        creds = Credentials("ASIAONE", "secret-ASIAONE", "token-ASIAONE")
        assert headers["authorization"] == botocore_authorization(
            "POST", base + "/", headers, seen["body"], creds, "us-east-1", "secretsmanager"
        )


def test_the_token_file_is_read_at_each_fetch(servers: tuple[str, Servers], tmp_path: Path) -> None:
    base, state = servers
    state.creds = [_creds_doc("ASIAONE", 3600)]
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    provider = credentials_from_environment(
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": base + "/creds",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        }
    )
    assert isinstance(provider, ContainerCredentials)
    provider.get()
    token_file.write_text("rotated")
    provider._current = None  # force the next fetch
    provider.get()
    assert state.auth_seen == ["first", "rotated"]


def test_credentials_are_refreshed_before_they_expire(servers: tuple[str, Servers]) -> None:
    base, state = servers
    now = [time.time()]
    provider = ContainerCredentials(base + "/creds", clock=lambda: now[0], sleep=lambda _: None)
    state.creds = [_creds_doc("ASIAONE", 20 * 60), _creds_doc("ASIATWO", 60 * 60), {}]
    assert provider.get().access_key == "ASIAONE"
    now[0] += 4 * 60  # 16 minutes left: still fine
    assert provider.get().access_key == "ASIAONE" and provider.fetches == 1
    now[0] += 2 * 60  # 14 left: refreshed
    assert provider.get().access_key == "ASIATWO"
    now[0] += 41 * 60  # 13 left, and the endpoint is failing: keep the ones that still work
    assert provider.get().access_key == "ASIATWO"
    now[0] += 5 * 60  # 8 left: a refresh is required, and it fails
    with pytest.raises(CredentialsError, match="HTTP 500"):
        provider.get()


def test_a_failing_credentials_endpoint_is_a_clean_service_error(servers: tuple[str, Servers]) -> None:
    base, state = servers
    state.creds = [{}]
    client = AwsJsonClient(
        SECRETS_MANAGER,
        region="us-east-1",
        credentials=ContainerCredentials(base + "/creds", sleep=lambda _: None),
        endpoint=base,
    )
    with pytest.raises(AwsServiceError) as caught:
        client.call("GetSecretValue", {"SecretId": "x"})
    assert caught.value.code == "CredentialsError" and not caught.value.retryable
    assert state.service_seen == []  # nothing unsigned was sent


def test_the_retry_quota_stops_retries_when_a_dependency_keeps_failing(servers: tuple[str, Servers]) -> None:
    base, state = servers
    state.service_status = [500]
    quota = RetryQuota(capacity=3 * RetryQuota.RETRY_COST)
    client = AwsJsonClient(
        SECRETS_MANAGER,
        region="us-east-1",
        credentials=Credentials("AKID", "secret"),
        endpoint=base,
        max_attempts=4,
        retry_quota=quota,
        sleep=lambda _: None,
    )
    for _ in range(3):
        with pytest.raises(AwsServiceError):
            client.call("GetSecretValue", {"SecretId": "x"})
    # 3 retries' worth of tokens: the first call retries 3 times, the next two fail at once.
    assert len(state.service_seen) == 4 + 1 + 1
    state.service_status = [200]
    client.call("GetSecretValue", {"SecretId": "x"})
    assert quota.available == RetryQuota.NO_RETRY_INCREMENT  # successes earn the quota back


def test_every_https_connection_shares_one_tls_context() -> None:
    env = _env(AWS_REGION="us-east-1")
    connections = [client_from_environment(p, env)._connection() for p in (DYNAMODB, SECRETS_MANAGER)]
    contexts = {id(conn.tls) for conn in connections}
    assert contexts == {id(client_context())}  # the CA bundle is loaded once per process, not per connection


@pytest.mark.parametrize("field", ["Token", "AccessKeyId"])
def test_credentials_that_cannot_be_sent_are_a_failed_fetch_not_used_until_they_expire(
    servers: tuple[str, Servers], field: str
) -> None:
    # A credentials endpoint (or something answering in its place) whose document would split our requests.
    base, state = servers
    now = [time.time()]
    provider = ContainerCredentials(base + "/creds", clock=lambda: now[0], sleep=lambda _: None)
    state.creds = [_creds_doc("ASIAONE", 20 * 60), {**_creds_doc("ASIATWO", 6 * 3600), field: "x\r\nx-amz-target: y"}]
    assert provider.get().access_key == "ASIAONE"
    now[0] += 6 * 60  # 14 minutes left: the refresh gets the bad document; the ones that still work are kept
    assert provider.get().access_key == "ASIAONE"
    now[0] += 5 * 60  # 9 left: a refresh is required, and it is refused loudly
    with pytest.raises(CredentialsError, match="malformed"):
        provider.get()
