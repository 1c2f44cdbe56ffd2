"""Helpers for tests against the local stack running template.yaml."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.stack import LocalStack


def event_table() -> dict[str, tuple[str, int]]:
    """events/README.md's table: event file -> (function, expected Function URL status)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "events" / "README.md").read_text()
    rows = [line.split("|")[1:4] for line in readme.splitlines() if line.startswith("| ") and ".json" in line]
    return {name.strip(): (function.strip(), int(status)) for name, function, status in rows}


def new_subject() -> str:
    """A fresh end-user id, so rate limits and histories do not mix between tests."""
    return "user-" + uuid.uuid4().hex[:12]


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def sign(
    stack: LocalStack, doc: dict[str, Any], *, signed: bool = True, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /sign to the Sign function's IAM-protected URL, SigV4-signed as a backend would (`raw`: this body)."""
    endpoints = stack.endpoints()
    body = json.dumps(doc).encode() if raw is None else raw
    request = AWSRequest(
        method="POST", url=endpoints["sign_url"] + "sign", data=body, headers={"content-type": "application/json"}
    )
    if signed:
        credentials = Credentials(endpoints["aws_access_key_id"], endpoints["aws_secret_access_key"])
        SigV4Auth(credentials, "lambda", endpoints["region"]).add_auth(request)
    status, _, data = http("POST", request.url, body, dict(request.headers.items()))
    return status, json.loads(data)


def signed_url(stack: LocalStack, **doc: Any) -> dict[str, Any]:
    """A signed URL document (asserting that signing worked)."""
    status, answer = sign(stack, doc)
    assert status == 200, answer
    return answer


def upstream_control(stack: LocalStack, **changes: Any) -> None:
    """Switch the embedded upstream's faults, replay file, pacing."""
    assert stack.upstream is not None
    stack.upstream.control.update({"reset": True, **changes})


def upstream_requests(stack: LocalStack) -> list[dict[str, Any]]:
    """Chat requests the embedded upstream received since the last reset."""
    assert stack.upstream is not None
    with stack.upstream.control.lock:
        return list(stack.upstream.control.requests)


def table_items(stack: LocalStack, conversation_id: str) -> list[dict[str, Any]]:
    """Every DynamoDB item of a conversation, read with boto3 from moto server."""
    assert stack.moto is not None
    ddb = stack.moto.client("dynamodb")
    table = ddb.list_tables()["TableNames"][0]
    result = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{conversation_id}"}},
        ConsistentRead=True,
    )
    return result["Items"]


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE body into its events (each keeps its trailing blank line), without their `id:` lines.

    Conversation streams put `id: <n>` before each event's data (see sse_ids); the data is what the tests read.
    """
    events = []
    for event in body.split(b"\n\n"):
        lines = [line for line in event.split(b"\n") if not line.startswith(b"id:")]
        if b"\n".join(lines).strip():
            events.append(b"\n".join(lines) + b"\n\n")
    return events


def sse_ids(body: bytes) -> list[int]:
    """The event ids of an SSE body, in order."""
    return [int(line[3:]) for line in body.split(b"\n") if line.startswith(b"id:")]


def sse_text(body: bytes) -> str:
    """Concatenated choice-0 content of an OpenAI SSE body."""
    text = ""
    for event in sse_events(body):
        data = event.decode().removeprefix("data: ").strip()
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices") or []:
            if choice.get("index") == 0:
                text += (choice.get("delta") or {}).get("content") or ""
    return text
