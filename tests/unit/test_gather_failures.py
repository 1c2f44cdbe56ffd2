"""A turn's parallel AWS calls (`_gather`) when some fail: which error wins, and nothing stays consumed or held."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sigstream.adapters.thread_pool import DaemonThreads, ProcessThreadPool
from sigstream.core.errors import (
    AlreadyUsedError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    SigstreamError,
)
from sigstream.core.settings import StreamSettings
from sigstream.core.signed_url import Grant
from stream_app.adapters.history_store import Reservation
from stream_app.chat.messages import Message
from stream_app.chat.request import ChatRequest
from stream_app.chat_turn import ChatDeps, _gather

SETTINGS = StreamSettings.from_env(
    {
        "SIGSTREAM_TABLE": "t",
        "SIGSTREAM_SIGNING_KEYS_SECRET": "s",
        "SIGSTREAM_PROVIDER_KEY_SECRET": "p",
        "SIGSTREAM_UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
    }
)
CHAT = ChatRequest({}, (Message("user", "hi"),), True, False, 16, 1, 4, 8)
POOL = ProcessThreadPool(max_workers=4, thread_name_prefix="aws-test")


class FakeStore:
    """Each call answers as scripted (a value or an exception); what was consumed, held or given back is kept."""

    def __init__(self, **script: Any) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.log: list[str] = []

    def _answer(self, name: str, value: Any) -> Any:
        with self.lock:
            self.log.append(name)
        answer = self.script.get(name, value)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def consume_nonce(self, nonce: str, expires: int) -> None:
        self._answer("consume_nonce", None)

    def release_nonce(self, nonce: str) -> None:
        self._answer("release_nonce", None)

    def load_history(self, conversation_id: str, subject: str, want: int) -> Any:
        return self._answer("load_history", object())

    def reserve(self, key: str, now: float, per_minute: int, daily: int, tokens: int) -> Reservation:
        return self._answer("reserve", Reservation(key, "20261202", tokens))  # type: ignore[no-any-return]

    def settle(self, reservation: Reservation, tokens: int) -> None:
        self._answer(f"settle {tokens}", None)


def _deps(store: FakeStore, key: Any = "sk-x", cached: bool = True) -> ChatDeps:
    def provider_key() -> str:
        if isinstance(key, BaseException):
            raise key
        return str(key)

    return ChatDeps(
        SETTINGS,
        store,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        provider_key,
        lambda: 1_800_000_000.0,
        POOL,
        DaemonThreads("watch-test"),
        cached_provider_key=(lambda: "sk-x") if cached else (lambda: None),
    )


def _grant(conversation: bool) -> Grant:
    return Grant(
        "POST", "/v1/chat/completions", "u", 0, 2_000_000_000, "conv_abcdefgh" if conversation else None, nonce="n1"
    )


def _refusal(deps: ChatDeps, conversation: bool) -> SigstreamError:
    with pytest.raises(SigstreamError) as caught:
        _gather(deps, _grant(conversation), CHAT)
    return caught.value


USED, LIMITED = AlreadyUsedError(), RateLimitedError("slow down", 5)
DOWN = ServiceUnavailableError("dynamodb is down")


@pytest.mark.parametrize("cached", [True, False])
def test_a_used_url_wins_over_an_unknown_conversation_and_nothing_is_given_back(cached: bool) -> None:
    store = FakeStore(consume_nonce=USED, load_history=NotFoundError("no such conversation"))
    assert isinstance(_refusal(_deps(store, cached=cached), conversation=True), AlreadyUsedError)
    assert "release_nonce" not in store.log  # it was not ours to give back


@pytest.mark.parametrize("cached", [True, False])
def test_a_rate_limit_gives_the_single_use_url_back(cached: bool) -> None:
    store = FakeStore(reserve=LIMITED)
    assert _refusal(_deps(store, cached=cached), conversation=False) is LIMITED
    assert store.log.count("release_nonce") == 1


@pytest.mark.parametrize("cached", [True, False])
def test_a_used_url_releases_the_reservation_it_made_beside_it(cached: bool) -> None:
    store = FakeStore(consume_nonce=USED)
    assert _refusal(_deps(store, cached=cached), conversation=False) is USED
    assert store.log.count("settle 0") == 1


def test_a_failed_key_fetch_gives_back_the_url_and_the_reservation_and_is_a_503() -> None:
    store = FakeStore()
    error = _refusal(_deps(store, key=ServiceUnavailableError("secret unavailable"), cached=False), conversation=False)
    assert error.status == 503
    assert store.log.count("release_nonce") == 1 and store.log.count("settle 0") == 1


def test_an_availability_failure_loses_to_a_refusal_and_a_non_sigstream_failure_is_a_503() -> None:
    store = FakeStore(consume_nonce=DOWN, reserve=LIMITED)
    assert _refusal(_deps(store), conversation=False) is LIMITED
    store = FakeStore(load_history=KeyError("boom"))
    error = _refusal(_deps(store), conversation=True)
    assert isinstance(error, ServiceUnavailableError) and isinstance(error.__cause__, KeyError)
    assert store.log.count("release_nonce") == 1


def test_the_job_on_the_request_thread_failing_still_waits_for_the_others_before_giving_back() -> None:
    release = threading.Event()
    store = FakeStore(reserve=LIMITED)
    consume = store.consume_nonce

    def slow_consume(nonce: str, expires: int) -> None:
        release.wait(5)
        consume(nonce, expires)

    store.consume_nonce = slow_consume  # type: ignore[method-assign]
    threading.Timer(0.2, release.set).start()
    assert _refusal(_deps(store), conversation=False) is LIMITED
    assert store.log == ["reserve", "consume_nonce", "release_nonce"]  # the URL is given back after it was taken
