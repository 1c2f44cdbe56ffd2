"""Floor baseline: the same AWS calls and upstream request as the Stream function, and nothing else, stdlib only.

Per turn: the signing-keys and provider-key secrets (fetched once, then cached, as ours are), the rate-limit
UpdateItem and the history Query in parallel, then POST /chat/completions and relay the provider's bytes.
No validation, no signature check, no logging, no metrics, no record of the reply: what is left is what
any handler doing this job must pay. It streams through the same runtime layer as the Stream function.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from sigstream_runtime import StreamingResponse


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Floor:
    """Everything the handler needs, made on first use."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.region = env["AWS_REGION"]
        aws = urlsplit(env.get("AWS_ENDPOINT_URL") or f"https://dynamodb.{self.region}.amazonaws.com")
        self.aws_host, self.aws_port = aws.hostname or "", aws.port
        self.aws_secure = aws.scheme == "https"
        self.upstream = urlsplit(env["SIGSTREAM_UPSTREAM_BASE_URL"])
        self.table = env["SIGSTREAM_TABLE"]
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(2)
        self.secrets: dict[str, str] = {}

    def _conn(self, name: str, host: str, port: int | None, secure: bool) -> http.client.HTTPConnection:
        conn = getattr(self.local, name, None)
        if conn is None:
            cls = http.client.HTTPSConnection if secure else http.client.HTTPConnection
            conn = cls(host, port, timeout=30)
            setattr(self.local, name, conn)
        return conn

    def aws(self, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One SigV4-signed JSON-protocol call."""
        service, content_type = (
            ("dynamodb", "application/x-amz-json-1.0")
            if target.startswith("DynamoDB")
            else ("secretsmanager", "application/x-amz-json-1.1")
        )
        body = json.dumps(payload).encode()
        now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        host = self.aws_host + (f":{self.aws_port}" if self.aws_port else "")
        digest = hashlib.sha256(body).hexdigest()
        headers = {
            "content-type": content_type,
            "host": host,
            "x-amz-content-sha256": digest,
            "x-amz-date": now,
            "x-amz-target": target,
        }
        if self.env.get("AWS_SESSION_TOKEN"):
            headers["x-amz-security-token"] = self.env["AWS_SESSION_TOKEN"]
        names = ";".join(sorted(headers))
        canonical = "\n".join(["POST", "/", "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), names, digest])
        scope = f"{now[:8]}/{self.region}/{service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{now}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = ("AWS4" + self.env["AWS_SECRET_ACCESS_KEY"]).encode()
        for part in (now[:8], self.region, service, "aws4_request"):
            key = _sign(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.env['AWS_ACCESS_KEY_ID']}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        conn = self._conn("aws", self.aws_host, self.aws_port, self.aws_secure)
        try:
            conn.request("POST", "/", body, headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        if response.will_close:
            conn.close()
        return dict(json.loads(data))

    def secret(self, name: str) -> str:
        """A secret, fetched once."""
        if name not in self.secrets:
            self.secrets[name] = self.aws("secretsmanager.GetSecretValue", {"SecretId": self.env[name]})["SecretString"]
        return self.secrets[name]

    def handle(self, event: dict[str, Any]) -> StreamingResponse:
        """One turn: AWS calls, then the upstream's bytes as they arrive."""
        self.secret("SIGSTREAM_SIGNING_KEYS_SECRET")
        key = self.secret("SIGSTREAM_PROVIDER_KEY_SECRET")
        minute = int(time.time()) // 60
        rate = self.pool.submit(
            self.aws,
            "DynamoDB_20120810.UpdateItem",
            {
                "TableName": self.table,
                "Key": {"pk": {"S": "RATE#floor"}, "sk": {"S": f"MIN#{minute}"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
                "ReturnValues": "UPDATED_NEW",
            },
        )
        self.aws(
            "DynamoDB_20120810.Query",
            {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": "CONV#floor"}},
                "ScanIndexForward": False,
                "Limit": 21,
                "ConsistentRead": True,
            },
        )
        rate.result()
        conn = self._conn("upstream", self.upstream.hostname or "", self.upstream.port, self.upstream.scheme == "https")
        conn.request(
            "POST",
            self.upstream.path + "/chat/completions",
            (event.get("body") or "").encode(),
            {"content-type": "application/json", "authorization": f"Bearer {key}", "accept-encoding": "identity"},
        )
        source = conn.getresponse()

        def body() -> Iterator[bytes]:
            while data := source.read1(65536):
                yield data

        return StreamingResponse(body(), source.status, {"content-type": "text/event-stream"})


_floor: Floor | None = None


def handler(event: dict[str, Any], context: object) -> StreamingResponse:
    """Lambda handler."""
    global _floor
    if _floor is None:
        _floor = Floor(dict(os.environ))
    return _floor.handle(event)
