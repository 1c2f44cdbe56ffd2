"""Cost control over the real stack: token reservations, the output cap, n, deployment policy, SW1 limits."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from signway_sdk import sign_url

from local.stack import LocalStack, StackOptions
from tests.conftest import RECORDED, ROOT
from tests.helpers import http, new_subject, signed_url, sse_events, upstream_control, upstream_requests

JSON = {"content-type": "application/json"}
BUDGET = 400


def post(url: str, doc: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return http("POST", url, json.dumps(doc).encode(), {**JSON, **(headers or {})})


def hi(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "count these words please"}], **extra}


def budget_item(stack: LocalStack, subject: str) -> dict[str, Any]:
    assert stack.moto is not None
    client = stack.moto.client("dynamodb")
    table = client.list_tables()["TableNames"][0]
    day = time.strftime("%Y%m%d", time.gmtime())
    item = client.get_item(TableName=table, Key={"pk": {"S": f"RATE#{subject}"}, "sk": {"S": f"DAY#{day}"}})
    return item.get("Item", {})


def tokens_charged(stack: LocalStack, subject: str) -> int:
    return int(budget_item(stack, subject).get("tokens", {}).get("N", "0"))


@pytest.fixture(scope="module")
def budget_stack() -> Iterator[LocalStack]:
    """template.yaml with a small daily token budget, room for many requests a minute, a short provider timeout."""
    stack = LocalStack(
        StackOptions(
            root=ROOT,
            template=ROOT / "template.yaml",
            parameters={"DailyTokenBudget": str(BUDGET), "RateLimit": "1000", "UpstreamTimeout": "3"},
            log_stream=io.StringIO(),
        )
    )
    stack.start()
    yield stack
    stack.stop()


def test_50_parallel_turns_overshoot_the_budget_by_at_most_one_reservation(budget_stack: LocalStack) -> None:
    upstream_control(budget_stack, delay_ms=40)  # long enough turns for many to be in flight at once
    subject = new_subject()
    # Half stateless (never charged before), half in conversations (charged only after, so all passed the check).
    answers = [signed_url(budget_stack, subject=subject, stateless=i % 2 == 0) for i in range(50)]
    pool = budget_stack.pools["StreamFunction"]
    saved, pool.max_environments = pool.max_environments, 25

    def one(answer: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, _, body = post(answer["url"], hi(max_tokens=50))
        return status, json.loads(body)

    try:
        with ThreadPoolExecutor(50) as executor:
            results = list(executor.map(one, answers))
    finally:
        pool.max_environments = saved
    served = [doc for status, doc in results if status == 200]
    refused = [doc for status, doc in results if status != 200]
    assert served and refused, [status for status, _ in results]
    assert {doc["error"]["code"] for doc in refused} == {"rate_limited"}
    # Retried as told (turns in flight free their holds as they finish), the budget fills to its limit.
    retried = [a for a, (status, _) in zip(answers, results, strict=True) if status != 200]
    for answer in retried:
        status, doc = one(answer)
        if status == 200:
            served.append(doc)
    spent = sum(doc["usage"]["total_tokens"] for doc in served)  # the provider's own count
    reservation = 50 + 50  # max_tokens plus the bound of this request's input (its UTF-8 bytes: under 50)
    # Reservations are upper bounds, so the budget holds exactly (the target allowed one reservation more).
    assert spent <= BUDGET, (spent, len(served))
    assert tokens_charged(budget_stack, subject) == spent  # every reservation settled to the real usage
    assert int(budget_item(budget_stack, subject)["held"]["N"]) == 0
    assert spent > BUDGET - reservation  # and it was the budget, not something else, that stopped them


def test_stateless_turns_are_charged_and_the_budget_refusal_says_when_to_retry(budget_stack: LocalStack) -> None:
    upstream_control(budget_stack)
    subject = new_subject()
    status, _, body = post(signed_url(budget_stack, subject=subject, stateless=True)["url"], hi(max_tokens=20))
    assert status == 200
    assert tokens_charged(budget_stack, subject) == json.loads(body)["usage"]["total_tokens"] > 0
    # One request that could use more than the whole day's budget can never run.
    status, _, body = post(signed_url(budget_stack, subject=subject, stateless=True)["url"], hi())
    assert status == 403 and json.loads(body)["error"]["param"] == "max_tokens"
    while status != 429:
        status, headers, body = post(
            signed_url(budget_stack, subject=subject, stateless=True)["url"], hi(max_tokens=90)
        )
        assert status in (200, 429)
    assert json.loads(body)["error"]["code"] == "rate_limited"
    midnight = 86400 - int(time.time()) % 86400
    assert abs(int(headers["retry-after"]) - midnight) <= 5
    assert tokens_charged(budget_stack, subject) <= BUDGET


def test_without_usage_from_the_provider_the_text_is_estimated_not_charged_as_zero(
    budget_stack: LocalStack, tmp_path: Path
) -> None:
    recorded = (RECORDED / "openai-sse" / "d61558011839.sse").read_bytes().split(b"\n\n")
    replay = tmp_path / "no-usage.sse"
    replay.write_bytes(b"\n\n".join(e for e in recorded if b'"usage":{' not in e.replace(b" ", b"")))
    upstream_control(budget_stack, replay=str(replay))
    subject = new_subject()
    status, _, body = post(signed_url(budget_stack, subject=subject)["url"], hi(stream=True, max_tokens=300))
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    text = "".join(
        (c["delta"].get("content") or "")
        for e in sse_events(body)
        if e.startswith(b"data: {")
        for c in json.loads(e[6:])["choices"]
    )
    assert len(text) > 400
    assert tokens_charged(budget_stack, subject) >= len(text) // 4  # about four characters a token


def test_a_reservation_holds_what_the_prompt_can_really_cost_not_a_four_characters_estimate(
    app_stack: LocalStack,
) -> None:
    # 6,000 astral characters: 1,504 tokens at four characters a token, 23,776 in o200k_base (gpt-4o-mini's
    # tokeniser; measured). At the deployment's 32,000 characters, 20 such turns in parallel all fit a 200,000-token
    # budget by the estimate and really cost about 2.4 million tokens.
    text = "".join(chr(0x20000 + i * 7) for i in range(6000))
    bound = len(text.encode()) + 10  # UTF-8 bytes bound any byte-level tokeniser's count; plus max_tokens
    upstream_control(app_stack, stall_after=1, stall_seconds=2)  # keep the turn in flight while we look
    for stateless in (True, False):
        subject = new_subject()
        url = signed_url(app_stack, subject=subject, stateless=stateless)["url"]
        with ThreadPoolExecutor(1) as executor:
            turn = executor.submit(
                post, url, {"stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}
            )
            deadline = time.monotonic() + 20
            while "held" not in budget_item(app_stack, subject) and time.monotonic() < deadline:
                time.sleep(0.05)
            held = int(budget_item(app_stack, subject)["held"]["N"])
            assert turn.result()[0] == 200
        assert held >= bound, (held, bound)
        assert int(budget_item(app_stack, subject)["held"]["N"]) == 0  # and it is released by the settlement


def test_a_provider_timeout_keeps_the_whole_reservation(budget_stack: LocalStack) -> None:
    # A provider does not stop generating because we stopped waiting: a non-streamed answer is sent whole once it
    # is done (a reasoning model is silent until its first token), so a timeout may have been billed in full.
    upstream_control(budget_stack, faults=[{"delay": 5, "status": 500}] * 3)
    subject = new_subject()
    status, _, body = post(signed_url(budget_stack, subject=subject, stateless=True)["url"], hi(max_tokens=100))
    assert status == 504 and json.loads(body)["error"]["code"] == "upstream_timeout", body
    assert upstream_requests(budget_stack)  # the provider did get the request
    assert tokens_charged(budget_stack, subject) >= 100  # was the prompt estimate only (about 10)
    assert int(budget_item(budget_stack, subject)["held"]["N"]) == 0


def test_the_output_cap_cannot_be_dodged_by_spelling(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    url = signed_url(app_stack, subject=new_subject(), stateless=True, max_tokens=100)["url"]
    for limits, status, param in (
        ({"max_completion_tokens": None, "max_tokens": 9_999_999}, 403, "max_tokens"),
        ({"max_tokens": None, "max_completion_tokens": 101}, 403, "max_completion_tokens"),
        ({"max_tokens": "9999999"}, 400, "max_tokens"),
        ({"max_completion_tokens": 50.5}, 400, "max_completion_tokens"),
        ({"n": 16}, 403, "n"),
    ):
        got, _, body = post(url, hi(**limits))
        assert (got, json.loads(body)["error"]["param"]) == (status, param), limits
    assert upstream_requests(app_stack) == []
    assert post(url, hi(max_tokens=10, max_completion_tokens=9_999_999))[0] == 200
    sent = upstream_requests(app_stack)[-1]["body"]
    assert sent["max_tokens"] == sent["max_completion_tokens"] == 10
    assert post(url, hi())[0] == 200
    assert upstream_requests(app_stack)[-1]["body"]["max_tokens"] == 100  # the signed cap is the default


def test_n_above_one_needs_a_url_that_signs_it(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    answer = signed_url(app_stack, subject=new_subject(), stateless=True, n=3)
    assert answer["query"]["n"] == "3"
    assert post(answer["url"], hi(n=3))[0] == 200
    assert upstream_requests(app_stack)[-1]["body"]["n"] == 3
    status, _, body = post(answer["url"], hi(n=4))
    assert status == 403 and json.loads(body)["error"]["param"] == "n"
    base, _, query = answer["url"].partition("?")
    status, _, _ = post(f"{base}?{query.replace('n=3', 'n=16')}", hi(n=16))
    assert status == 403  # n is inside the signature


def test_a_url_signed_with_only_a_subject_gets_the_deployments_safe_defaults(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    url = signed_url(app_stack, subject=new_subject(), stateless=True)["url"]
    assert post(url, hi())[0] == 200
    sent = upstream_requests(app_stack)[-1]["body"]
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 1024 and "n" not in sent
    status, _, body = post(url, hi(model="gpt-4o"))
    assert status == 403 and json.loads(body)["error"]["param"] == "model"
    for name, value in (
        ("service_tier", "priority"),
        ("store", True),
        ("metadata", {"a": "b"}),
        ("modalities", ["audio"]),
    ):
        status, _, body = post(url, hi(**{name: value}))
        assert status == 400 and json.loads(body)["error"]["param"] == name
    big = {"messages": [{"role": "user", "content": "x" * 1_000_000}]}
    status, _, body = post(url, big)
    assert status == 400 and json.loads(body)["error"]["param"] == "messages"
    many = {"messages": [{"role": "user", "content": "x"}] * 33}
    assert post(url, many)[0] == 400
    upstream = [r for r in upstream_requests(app_stack)]
    assert len(upstream) == 1  # none of the refused requests reached the provider


def _sw1(
    stack: LocalStack,
    expiry: int = 60,
    when: datetime | None = None,
    app: dict[str, str] | None = None,
    body: str | None = None,
) -> str:
    endpoints = stack.endpoints()
    app = app or endpoints["sw1_app"]
    return sign_url(
        app["id"],
        app["secret"],
        endpoints["stream_url"],
        endpoints["upstream_base_url"] + "/chat/completions",
        expiry,
        "POST",
        body=body,
        datetime_override=(when or datetime.now(UTC)).replace(tzinfo=None),
    )


SW1_BODY = {"model": "local-echo-1", "messages": [{"role": "user", "content": "sw1"}]}


def test_sw1_lifetimes_are_capped_and_future_dates_refused(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    assert post(_sw1(app_stack, 600), SW1_BODY)[0] == 200
    status, _, body = post(_sw1(app_stack, 4_294_967_295), SW1_BODY)
    assert status == 403 and json.loads(body)["error"]["code"] == "invalid_signature"
    for year in (2099, 9999):
        status, _, body = post(_sw1(app_stack, 60, datetime(year, 1, 1, tzinfo=UTC)), SW1_BODY)
        assert status == 403 and json.loads(body)["error"]["code"] == "expired"


def test_sw1_urls_are_rate_limited_and_never_forward_the_clients_org_headers(app_stack: LocalStack) -> None:
    upstream_control(app_stack)
    url = _sw1(app_stack, 300)
    headers = {"openai-organization": "org-victim", "openai-project": "proj-victim"}
    statuses = [post(url, SW1_BODY, headers)[0] for _ in range(40)]
    minute_changed = statuses.count(200) > 20  # the run straddled a minute boundary: two windows
    assert statuses[:20] == [200] * 20 and (minute_changed or statuses[20:] == [429] * 20), statuses
    forwarded = upstream_requests(app_stack)[0]["headers"]
    assert not {k.lower() for k in forwarded} & {"openai-organization", "openai-project"}


@pytest.fixture()
def policy_app(app_stack: LocalStack) -> Iterator[dict[str, Any]]:
    """A second SW1 app with a body policy and a small per-app limit, added to the stack's secret."""
    assert app_stack.moto is not None
    client = app_stack.moto.client("secretsmanager")
    arn = app_stack.secret_arns["sw1-apps"]
    original = client.get_secret_value(SecretId=arn)["SecretString"]
    app = {
        "id": "policy-app",
        "secret": "policy-app-secret-0123456789",
        "proxy": app_stack.endpoints()["upstream_base_url"] + "/chat/completions",
        "headers": json.loads(original)["apps"][0]["headers"],
        "models": ["local-echo-1"],
        "max_tokens": 64,
        "rate_limit_per_minute": 1000,
        "url_rate_limit_per_minute": 1000,
        "max_lifetime": 120,
    }
    doc = json.loads(original)
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({"apps": [*doc["apps"], app]}))
    app_stack.pools["StreamFunction"].recycle()  # a cold start reads the secret afresh
    yield app
    client.put_secret_value(SecretId=arn, SecretString=original)
    app_stack.pools["StreamFunction"].recycle()


def test_sw1_app_policy_applies_to_bodies_it_did_not_sign(app_stack: LocalStack, policy_app: dict[str, Any]) -> None:
    upstream_control(app_stack)
    url = _sw1(app_stack, 60, app=policy_app)
    assert post(url, SW1_BODY)[0] == 200
    assert upstream_requests(app_stack)[-1]["body"]["max_tokens"] == 64  # the cap, written in
    for doc, param in (
        ({**SW1_BODY, "model": "gpt-4o"}, "model"),
        ({**SW1_BODY, "max_completion_tokens": 65, "max_tokens": None}, "max_completion_tokens"),
        ({**SW1_BODY, "n": 8}, "n"),
    ):
        status, _, body = post(url, doc)
        assert status == 403 and json.loads(body)["error"]["param"] == param, body
    # Parameters that raise the price past the token cap: rejected prediction tokens are billed as output (a 64-token
    # cap, and a megabyte of prediction), priority processing costs more per token.
    for name, value in (("prediction", {"type": "content", "content": "x" * 10_000}), ("service_tier", "priority")):
        status, _, body = post(url, {**SW1_BODY, name: value})
        assert status == 400 and json.loads(body)["error"]["param"] == name, body
    assert post(url, {**SW1_BODY, "temperature": 0.5})[0] == 200  # the Stream route's default parameters pass
    # A body the app's backend signed is the app's own decision.
    signed_doc = json.dumps({**SW1_BODY, "max_tokens": 500})
    status, _, _ = http("POST", _sw1(app_stack, 60, app=policy_app, body=signed_doc), signed_doc.encode(), JSON)
    assert status == 200 and upstream_requests(app_stack)[-1]["body"]["max_tokens"] == 500
    status, _, body = post(_sw1(app_stack, 121, app=policy_app), SW1_BODY)  # the app's own lifetime cap
    assert status == 403


def test_a_refused_request_does_not_use_up_a_single_use_url(budget_stack: LocalStack) -> None:
    """A single-use URL refused by the budget (429) or by a history conflict (409) still works once."""
    upstream_control(budget_stack)
    subject = new_subject()
    status = 200
    while status != 429:  # spend the day's budget
        status, _, _ = post(signed_url(budget_stack, subject=subject, stateless=True)["url"], hi(max_tokens=90))
        assert status in (200, 429)
    once = signed_url(budget_stack, subject=subject, stateless=True, single_use=True)["url"]
    for _ in range(2):  # the second try is refused by the budget again, not as already used
        status, _, body = post(once, hi(max_tokens=90))
        assert status == 429 and json.loads(body)["error"]["code"] == "rate_limited", body
    # On a conversation: a resend that does not match the stored history is a 409; the same URL then works.
    other = new_subject()
    first = signed_url(budget_stack, subject=other)
    status, _, _ = post(first["url"], hi(max_tokens=20))
    assert status == 200
    once = signed_url(budget_stack, subject=other, conversation_id=first["conversation_id"], single_use=True)["url"]
    wrong = {"messages": [{"role": "user", "content": "not what was said"}, {"role": "assistant", "content": "x"}]}
    status, _, body = post(once, {**wrong, "max_tokens": 20})
    assert status == 409 and json.loads(body)["error"]["code"] == "history_conflict", body
    status, _, body = post(once, {"messages": [{"role": "user", "content": "and now?"}], "max_tokens": 20})
    assert status == 200, body
    status, _, body = post(once, {"messages": [{"role": "user", "content": "again?"}], "max_tokens": 20})
    assert status == 403 and json.loads(body)["error"]["code"] == "already_used"
