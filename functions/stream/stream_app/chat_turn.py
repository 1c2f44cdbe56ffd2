"""One chat turn: history in, provider stream out to the client, turn stored even if the stream is cut."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

from sigstream.core.errors import BadRequestError, ServiceUnavailableError, SigstreamError, UpstreamError
from sigstream.core.settings import StreamSettings
from sigstream.core.signed_url import Grant
from stream_app.adapters.history_store import Conversation, HistoryStore
from stream_app.adapters.upstream_client import UpstreamClient, UpstreamResponse
from stream_app.chat import fast_json
from stream_app.chat.reply import Reply
from stream_app.chat.request import ChatRequest, parse_chat_request
from stream_app.chat.sse import DONE, SseParser, error_event, event_data
from stream_app.chat.window import select_window
from stream_app.http_io import SSE_HEADERS, HttpResult, Request, json_result
from stream_app.observability import logger, record


@dataclass
class ChatDeps:
    """What a turn needs, wired once per cold start."""

    settings: StreamSettings
    store: HistoryStore
    upstream: UpstreamClient
    provider_key: Callable[[], str]
    clock: Callable[[], float]
    pool: Executor


def _gather(deps: ChatDeps, grant: Grant) -> tuple[str, Conversation | None, list[dict[str, Any]]]:
    """Key, rate check, history and nonce in parallel: one round trip of latency, not four."""
    subject, conversation_id = grant.subject, grant.conversation_id
    now = deps.clock()
    s = deps.settings
    jobs: list[Future[Any]] = [
        deps.pool.submit(deps.provider_key),
        deps.pool.submit(deps.store.check_rate, subject, now, s.rate_limit_per_minute, s.daily_token_budget),
    ]
    if conversation_id:
        jobs.append(deps.pool.submit(deps.store.load, conversation_id, subject, s.history_max_messages))
    if grant.nonce:
        jobs.append(deps.pool.submit(deps.store.consume_nonce, grant.nonce, grant.expires + 60))
    # Report the most meaningful failure: used nonce, rate limit, unknown conversation, then availability.
    errors = [f.exception() for f in jobs]
    for error in sorted((e for e in errors if e), key=lambda e: getattr(e, "status", 999) == 503):
        if isinstance(error, SigstreamError):
            raise error
        raise ServiceUnavailableError("a dependency failed") from error
    key = jobs[0].result()
    conversation, history = jobs[2].result() if conversation_id else (None, [])
    return key, conversation, history


def chat_turn(request: Request, grant: Grant, deps: ChatDeps) -> HttpResult:
    """POST /v1/chat/completions."""
    s = deps.settings
    chat = parse_chat_request(request.body, request.headers.get("content-type", ""), grant, s.default_model)
    key, conversation, history = _gather(deps, grant)
    window = select_window(
        history,
        max_messages=s.history_max_messages,
        token_budget=s.history_token_budget,
        summary=conversation.summary if conversation else None,
    )
    if s.moderation != "off":
        _moderate(deps, key, chat)
    params = {**chat.params, "messages": window + chat.messages}
    started = deps.clock()
    response = deps.upstream.open_chat(key, params)  # retries 429/5xx and refused connections here
    turn = _Turn(deps, chat, conversation, started, response)
    if not chat.stream:
        return turn.whole(response)
    chunks = response.chunks()
    first = turn.first_events(chunks)  # errors before the first byte still get a proper status
    return HttpResult(200, dict(SSE_HEADERS), turn.stream(first, chunks))


def _moderate(deps: ChatDeps, key: str, chat: ChatRequest) -> None:
    text = "\n".join(
        m["content"] for m in chat.messages if m.get("role") == "user" and isinstance(m.get("content"), str)
    )
    try:
        flagged = deps.upstream.moderate(key, text)
    except Exception as exc:
        if deps.settings.moderation == "fail-closed":
            raise ServiceUnavailableError("moderation is unavailable") from exc
        logger.warning("moderation unavailable; failing open", extra={"error": type(exc).__name__})
        return
    if flagged:
        raise BadRequestError("the message was flagged by moderation", param="messages")


def _as_error(exc: Exception) -> SigstreamError:
    return exc if isinstance(exc, SigstreamError) else UpstreamError("the provider sent an unreadable stream")


class _Turn:
    """Streams one reply and stores it exactly once, complete or not."""

    def __init__(
        self,
        deps: ChatDeps,
        chat: ChatRequest,
        conversation: Conversation | None,
        started: float,
        response: UpstreamResponse,
    ) -> None:
        self.deps = deps
        self.chat = chat
        self.conversation = conversation
        self.started = started
        self.response = response
        self.reply = Reply()
        self.parser = SseParser()
        self.first_token_at: float | None = None
        self.saw_done = False

    def whole(self, response: UpstreamResponse) -> HttpResult:
        try:
            doc = json.loads(response.read())
        except ValueError as exc:
            raise UpstreamError("the provider sent a malformed answer") from exc
        finally:
            self.response.close()
        if not isinstance(doc, dict):
            raise UpstreamError("the provider sent a malformed answer")
        self.reply.add_completion(doc)
        self._store("complete")
        return json_result(200, doc)

    def _accept(self, raw: bytes) -> bool:
        """Record one event; whether to forward it as is ([DONE] is sent after storing)."""
        data = event_data(raw)
        if data is None:
            return False  # comments, keep-alives
        try:
            chunk = fast_json.loads(data)
        except (ValueError, RecursionError):
            if data.strip() == "[DONE]":
                self.saw_done = True
            else:
                record("MalformedUpstreamEvents", 1)
            return False  # a client SDK would choke on it
        if chunk.__class__ is not dict:
            return False
        self.reply.add_chunk(chunk)
        if self.first_token_at is None:
            self.first_token_at = self.deps.clock()
        if not self.chat.usage_requested and not chunk.get("choices") and chunk.get("usage"):
            return False  # usage was forced for our records; this client did not ask for it
        return True

    def _events(self, data: bytes) -> bytes:
        """The bytes to forward for one read: the read itself when it is whole events that all go through."""
        had_partial = self.parser.pending
        events = self.parser.feed(data)
        kept = [raw for raw in events if self._accept(raw)]
        if not had_partial and len(kept) == len(events) and sum(map(len, kept)) == len(data):
            return data  # the common case: relayed without copying
        return b"".join(kept)

    def first_events(self, chunks: Iterator[bytes]) -> bytes:
        """Read until the first forwardable event (or fail with a status)."""
        try:
            for data in chunks:
                out = self._events(data)
                if out:
                    return out
        except Exception as exc:
            self.response.close()
            raise _as_error(exc) from exc
        self.response.close()
        raise UpstreamError("the provider closed the stream without an answer")

    def stream(self, first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The client's SSE body; [DONE] goes out only once the turn is stored.

        So a client that saw [DONE] can read the turn back at once, and a client that goes away
        mid-stream still gets its turn stored.
        """
        finished = False
        try:
            status = yield from self._relay(first, chunks)
            self._finish(status)
            finished = True
            yield DONE
        finally:
            if not finished:  # GeneratorExit: the Runtime API connection broke mid-stream
                self._finish("incomplete")

    def _relay(self, first: bytes, chunks: Iterator[bytes]) -> Generator[bytes, None, str]:
        yield first
        window = self.deps.settings.coalesce_ms / 1000
        pending: list[bytes] = []  # read but not yet written (coalescing, or the stream's end)
        try:
            if window:
                last_flush = self.deps.clock()
                for data in chunks:
                    pending.append(self._events(data))
                    if self.deps.clock() - last_flush >= window and any(pending):
                        yield b"".join(pending)
                        pending, last_flush = [], self.deps.clock()
            else:
                events = self._events
                for data in chunks:
                    out = events(data)
                    if out:
                        yield out
            pending += [raw for raw in self.parser.flush() if self._accept(raw)]
        except Exception as exc:
            error = _as_error(exc)
            record("StreamErrors", 1, kind=error.code)
            logger.warning("upstream failed mid-stream", extra={"kind": error.code})
            yield b"".join([*pending, error_event(error.code, error.message)])
            return "incomplete"
        if not self.saw_done:
            pending.append(error_event("upstream_error", "the provider ended the stream early"))
        if any(pending):
            yield b"".join(pending)
        return "complete" if self.saw_done else "incomplete"

    def _finish(self, status: str) -> None:
        self.response.close()
        self._store(status)

    def _store(self, status: str) -> None:
        now = self.deps.clock()
        usage = self.reply.usage or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if self.first_token_at is not None:
            record("TimeToFirstToken", (self.first_token_at - self.started) * 1000, "Milliseconds")
        record("StreamDuration", (now - self.started) * 1000, "Milliseconds")
        record("TokensIn", tokens_in)
        record("TokensOut", tokens_out)
        if self.conversation is None:
            return
        assistant = {
            **self.reply.message(),
            "finish_reason": self.reply.finish_reason,
            "usage": self.reply.usage,
            "model": self.reply.model,
            "latency_ms": int((now - self.started) * 1000),
            "status": status,
        }
        turn = [{**m, "status": "complete"} for m in self.chat.messages] + [assistant]
        try:
            self.deps.store.append_turn(self.conversation, turn, now=now, tokens_in=tokens_in, tokens_out=tokens_out)
            if self.deps.settings.daily_token_budget > 0:
                self.deps.store.add_tokens(self.conversation.subject, now, tokens_in + tokens_out)
        except SigstreamError as exc:
            # The transaction is all-or-nothing: nothing half-written; the loss is logged and counted.
            record("HistoryWriteFailures", 1)
            cause = getattr(exc.__cause__, "code", type(exc.__cause__).__name__)
            logger.error(
                "could not store the turn",
                extra={"error": exc.code, "cause": cause, "conversation_id": self.conversation.id},
            )
