"""The Stream function on the local stack: recorded OpenAI streams, the openai SDK, history, faults."""

from __future__ import annotations

import http.client as httpclient
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest

from local.stack import LocalStack
from tests.conftest import RECORDED
from tests.helpers import http, new_subject, signed_url, sse_events, table_items, upstream_control, upstream_requests

FIXTURES = RECORDED / "openai-sse"
INDEX = json.loads((FIXTURES / "index.json").read_text())


def stream_post(url: str, doc: dict) -> tuple[int, list[tuple[float, bytes]]]:
    """POST and read the SSE body as it arrives: (status, [(arrival time, chunk)])."""
    parts = urlsplit(url)
    conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", f"{parts.path}?{parts.query}", json.dumps(doc), {"content-type": "application/json"})
    response = conn.getresponse()
    arrivals = []
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        arrivals.append((time.monotonic(), chunk))
    return response.status, arrivals


def client_for(answer: dict) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=answer["base_url"], api_key="not-needed", default_query=answer["query"], max_retries=0
    )


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_recorded_streams_reach_the_client_unchanged_and_live(app_stack: LocalStack, entry: dict) -> None:
    upstream_control(app_stack, replay=str(FIXTURES / entry["file"]), delay_ms=15)
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    doc = {
        "model": "local-echo-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "x"}],
    }
    status, arrivals = stream_post(answer["url"], doc)
    assert status == 200
    body = b"".join(chunk for _, chunk in arrivals)
    assert sse_events(body) == sse_events((FIXTURES / entry["file"]).read_bytes())  # byte for byte
    chunks = [json.loads(e[6:]) for e in sse_events(body) if e != b"data: [DONE]\n\n"]
    text = "".join((c["delta"].get("content") or "") for ch in chunks for c in ch["choices"] if c["index"] == 0)
    assert text == entry["choice0_text"]
    assert chunks[-1]["usage"] == entry["usage"]
    assert any("tool_calls" in c["delta"] for ch in chunks for c in ch["choices"]) == entry["has_tool_calls"]
    # Streaming, not buffering: the first event arrives well before the last one.
    assert len(arrivals) >= 2
    assert arrivals[-1][0] - arrivals[0][0] >= 0.5 * 0.015 * (entry["data_events"] - 2)


def test_openai_sdk_streams_and_usage_is_recorded(app_stack: LocalStack) -> None:
    upstream_control(app_stack, delay_ms=5)
    answer = signed_url(app_stack, subject=new_subject())
    stream = client_for(answer).chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "stream me please"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo (1 messages): stream me please"
    assert all(c.usage is None for c in chunks)  # not requested, so not forwarded
    sent = upstream_requests(app_stack)[-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # forced for our records
    items = [i for i in table_items(app_stack, answer["conversation_id"]) if i["sk"]["S"].startswith("MSG#")]
    assistant = json.loads(json.dumps(items[-1]))
    assert assistant["usage"]["M"]["completion_tokens"]["N"] == "6"  # the six word-deltas of the reply
    assert assistant["status"]["S"] == "complete"


def test_openai_sdk_non_streaming(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    completion = client_for(answer).chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "whole please"}]
    )
    assert completion.choices[0].message.content == "Echo (1 messages): whole please"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_two_turns_share_history_and_store_one_item_per_message(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    subject = new_subject()
    first = signed_url(app_stack, subject=subject)
    cid = first["conversation_id"]
    client_for(first).chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": "turn one"}])
    second = signed_url(app_stack, subject=subject, conversation_id=cid)
    reply = client_for(second).chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "turn two"}]
    )
    assert reply.choices[0].message.content == "Echo (3 messages): turn two"
    sent = upstream_requests(app_stack)[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["turn one", "Echo (1 messages): turn one", "turn two"]
    listing = signed_url(app_stack, subject=subject, method="GET", path=f"/v1/conversations/{cid}/messages")
    status, _, body = http("GET", listing["url"])
    page = json.loads(body)
    assert status == 200 and page["object"] == "list" and page["has_more"] is False
    assert [(m["role"], m["content"]) for m in page["data"]] == [
        ("user", "turn one"),
        ("assistant", "Echo (1 messages): turn one"),
        ("user", "turn two"),
        ("assistant", "Echo (3 messages): turn two"),
    ]
    assert all({"id", "created_at"} <= m.keys() for m in page["data"])
    items = table_items(app_stack, cid)
    assert sorted(i["sk"]["S"] for i in items) == [
        "MSG#00000001",
        "MSG#00000002",
        "MSG#00000003",
        "MSG#00000004",
        "~META",
    ]
    meta = next(i for i in items if i["sk"]["S"] == "~META")
    assert meta["message_count"]["N"] == "4" and meta["subject"]["S"] == subject


def test_conversation_listing_is_per_subject_newest_first_and_deletable(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    subject, other = new_subject(), new_subject()
    ids = []
    for text in ("first chat", "second chat"):
        answer = signed_url(app_stack, subject=subject)
        client_for(answer).chat.completions.create(model="local-echo-1", messages=[{"role": "user", "content": text}])
        ids.append(answer["conversation_id"])
        time.sleep(1.1)  # updated_at has one-second resolution
    listing = signed_url(app_stack, subject=subject, method="GET", path="/v1/conversations")
    page = json.loads(http("GET", listing["url"] + "&limit=1")[2])
    assert [c["id"] for c in page["data"]] == [ids[1]] and page["has_more"] is True
    page2 = json.loads(http("GET", listing["url"] + "&limit=1&after=" + page["next_cursor"])[2])
    assert [c["id"] for c in page2["data"]] == [ids[0]]
    assert page["data"][0]["title"] == "second chat"
    # Another subject can neither list nor read them.
    theirs = signed_url(app_stack, subject=other, method="GET", path="/v1/conversations")
    assert json.loads(http("GET", theirs["url"])[2])["data"] == []
    peek = signed_url(app_stack, subject=other, method="GET", path=f"/v1/conversations/{ids[0]}/messages")
    status, _, body = http("GET", peek["url"])
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    delete = signed_url(app_stack, subject=subject, method="DELETE", path=f"/v1/conversations/{ids[0]}")
    status, _, body = http("DELETE", delete["url"])
    assert status == 200 and json.loads(body) == {"id": ids[0], "object": "conversation.deleted", "deleted": True}
    assert table_items(app_stack, ids[0]) == []


def test_upstream_429_then_success_is_retried_and_stored_once(app_stack: LocalStack) -> None:
    upstream_control(app_stack, faults=[{"status": 429, "retry_after": 0}])
    answer = signed_url(app_stack, subject=new_subject())
    reply = client_for(answer).chat.completions.create(
        model="local-echo-1", messages=[{"role": "user", "content": "retry me"}]
    )
    assert reply.choices[0].message.content == "Echo (1 messages): retry me"
    assert len(upstream_requests(app_stack)) == 2
    messages = [i for i in table_items(app_stack, answer["conversation_id"]) if i["sk"]["S"].startswith("MSG#")]
    assert len(messages) == 2


def test_persistent_upstream_429_is_a_429_with_retry_after(app_stack: LocalStack) -> None:
    upstream_control(app_stack, faults=[{"status": 429, "retry_after": 7}] * 3)
    answer = signed_url(app_stack, subject=new_subject())
    status, headers, body = http(
        "POST",
        answer["url"],
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 429 and headers["retry-after"] == "7"
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert table_items(app_stack, answer["conversation_id"]) == []


def test_upstream_500s_become_502(app_stack: LocalStack) -> None:
    upstream_control(app_stack, faults=[{"status": 500}] * 3)
    answer = signed_url(app_stack, subject=new_subject(), stateless=True)
    status, _, body = http(
        "POST",
        answer["url"],
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 502 and json.loads(body)["error"]["code"] == "upstream_error"


def test_upstream_cut_mid_stream_sends_an_error_event_and_stores_an_incomplete_reply(app_stack: LocalStack) -> None:
    upstream_control(app_stack, cut_after=4)
    answer = signed_url(app_stack, subject=new_subject())
    doc = {"stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
    status, arrivals = stream_post(answer["url"], doc)
    body = b"".join(c for _, c in arrivals)
    events = sse_events(body)
    assert status == 200
    assert json.loads(events[-2][6:])["error"]["code"] == "upstream_error"
    assert events[-1] == b"data: [DONE]\n\n"
    items = [i for i in table_items(app_stack, answer["conversation_id"]) if i["sk"]["S"].startswith("MSG#")]
    assert [i["role"]["S"] for i in items] == ["user", "assistant"]
    assert items[1]["status"]["S"] == "incomplete"
    assert items[1]["content"]["S"] == "Echo (1 messages): "  # the words that made it through


def test_rate_limit_per_subject(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    body = json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode()
    for _ in range(2):  # a run that straddles a minute boundary sees two windows: run it again
        subject, minute = new_subject(), int(time.time()) // 60
        results = []
        for _ in range(21):  # template default: 20 per minute
            answer = signed_url(app_stack, subject=subject, stateless=True)
            results.append(http("POST", answer["url"], body, {"content-type": "application/json"}))
        if int(time.time()) // 60 == minute:
            break
    assert [r[0] for r in results] == [200] * 20 + [429]
    _, headers, data = results[-1]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert json.loads(data)["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    "body,content_type,status,param",
    [
        (b"{not json", "application/json", 400, "body"),
        (b'{"messages": []}', "application/json", 400, "messages"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', "application/json", 400, "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "application/json", 400, "stream"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "text/plain", 415, "content-type"),
        (b"\xff\xfe", "application/json", 400, "body"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "body"),
    ],
)
def test_bad_chat_requests_are_4xx_naming_the_problem(
    app_stack: LocalStack, body: bytes, content_type: str, status: int, param: str
) -> None:
    answer = signed_url(app_stack, subject=new_subject())
    got, _, data = http("POST", answer["url"], body, {"content-type": content_type})
    assert got == status, data
    assert json.loads(data)["error"]["param"] == param
    assert table_items(app_stack, answer["conversation_id"]) == []


def test_unknown_routes_and_methods(app_stack: LocalStack) -> None:
    base = app_stack.endpoints()["stream_url"]
    status, _, body = http("GET", base + "v1/nothing")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, _, body = http("GET", base + "v1/chat/completions")
    assert status == 405


def test_sw1_app_is_in_the_local_secret(app_stack: LocalStack) -> None:
    assert app_stack.moto is not None
    sm = app_stack.moto.client("secretsmanager")
    arn = next(s["ARN"] for s in sm.list_secrets()["SecretList"] if "Sw1Apps" in s["Name"])
    apps = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["apps"]
    assert apps[0]["id"] == app_stack.endpoints()["sw1_app"]["id"]
    assert apps[0]["proxy"] == app_stack.endpoints()["upstream_base_url"] + "/chat/completions"


def test_fixture_files_exist() -> None:
    assert len(INDEX) == 12 and all((FIXTURES / e["file"]).is_file() for e in INDEX)
    assert isinstance(Path(FIXTURES), Path)
