"""One chat turn: history in, provider stream out to the client, turn stored even if the stream is cut."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from sigstream.core.errors import BadRequestError, ServiceUnavailableError, SigstreamError, UpstreamError
from sigstream.core.settings import StreamSettings
from sigstream.core.signed_url import Grant
from stream_app.adapters.history_store import (
    Conversation,
    HistoryStore,
    Reservation,
    StoredMessage,
    clean_usage,
    subject_limit_key,
)
from stream_app.adapters.upstream_client import UpstreamClient, UpstreamResponse
from stream_app.chat import fast_json
from stream_app.chat.messages import Message, assistant_reply
from stream_app.chat.policy import ChatPolicy
from stream_app.chat.reply import Reply
from stream_app.chat.request import ChatRequest, parse_chat_request
from stream_app.chat.sse import DONE, SseParser, error_event, event_data
from stream_app.chat.window import select_window
from stream_app.http_io import SSE_HEADERS, HttpResult, Request, json_result
from stream_app.observability import describe_cause, logger, note, record


@dataclass
class ChatDeps:
    """What a turn needs, wired once per cold start."""

    settings: StreamSettings
    store: HistoryStore
    upstream: UpstreamClient
    provider_key: Callable[[], str]
    clock: Callable[[], float]
    pool: Executor
    policy: ChatPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = ChatPolicy.from_settings(self.settings)


class _Budget:
    """A turn's hold on the subject's daily token budget, settled exactly once."""

    def __init__(self, deps: ChatDeps, reservation: Reservation | None, input_tokens: int) -> None:
        self.deps = deps
        self.reservation = reservation
        self.input_tokens = input_tokens  # the estimate, charged when the provider reports no usage
        self.settled = False

    def settle(self, tokens: int) -> None:
        if self.settled or self.reservation is None or self.deps.settings.daily_token_budget <= 0:
            return
        self.settled = True
        try:
            self.deps.store.settle(self.reservation, tokens)
        except Exception as exc:  # the turn itself is done; a lost settlement is logged and counted
            record("BudgetSettlementFailures", 1)
            logger.error("could not settle the token reservation", extra={"error": type(exc).__name__})

    def fail(self, error: SigstreamError) -> None:
        """Before any answer: a refusal costs nothing; a provider failure may have billed the prompt.

        A timeout may have billed everything: the provider does not stop generating because we stopped waiting
        (a non-streamed answer, or a model reasoning before its first token), so it keeps the whole reservation.
        """
        if error.status == 504 and self.reservation is not None:
            self.settle(self.reservation.tokens)
        else:
            self.settle(self.input_tokens if error.status == 502 else 0)


def _reserve(deps: ChatDeps, grant: Grant, tokens: int) -> Reservation:
    s = deps.settings
    return deps.store.reserve(
        subject_limit_key(grant.subject), deps.clock(), s.rate_limit_per_minute, s.daily_token_budget, tokens
    )


def _gather(
    deps: ChatDeps, grant: Grant, chat: ChatRequest
) -> tuple[str, Conversation | None, list[StoredMessage], Reservation | None]:
    """Key, rate/budget reservation (stateless) or history, and nonce in parallel: one round trip of latency."""
    subject, conversation_id = grant.subject, grant.conversation_id
    s = deps.settings
    jobs: dict[str, Future[Any]] = {"key": deps.pool.submit(deps.provider_key)}
    if conversation_id:  # the reservation needs the history window's size: it follows the load
        jobs["history"] = deps.pool.submit(deps.store.load, conversation_id, subject, s.history_max_messages)
    else:
        jobs["reservation"] = deps.pool.submit(_reserve, deps, grant, chat.input_bound + chat.output_tokens)
    if grant.nonce:
        jobs["nonce"] = deps.pool.submit(deps.store.consume_nonce, grant.nonce, grant.expires + 60)
    # Report the most meaningful failure: used nonce, rate limit, unknown conversation, then availability.
    errors = [e for e in (f.exception() for f in jobs.values()) if e]
    if errors:
        if "reservation" in jobs and jobs["reservation"].exception() is None:
            _Budget(deps, jobs["reservation"].result(), 0).settle(0)
        for error in sorted(errors, key=lambda e: getattr(e, "status", 999) == 503):
            if isinstance(error, SigstreamError):
                raise error
            raise ServiceUnavailableError("a dependency failed") from error
    key = jobs["key"].result()
    conversation, history = jobs["history"].result() if conversation_id else (None, [])
    reservation = jobs["reservation"].result() if "reservation" in jobs else None
    return key, conversation, history, reservation


def chat_turn(request: Request, grant: Grant, deps: ChatDeps) -> HttpResult:
    """POST /v1/chat/completions."""
    s = deps.settings
    chat = parse_chat_request(request.body, request.headers.get("content-type", ""), grant, deps.policy)
    key, conversation, history, reservation = _gather(deps, grant, chat)
    window = select_window(
        [m.message for m in history],
        max_messages=s.history_max_messages,
        token_budget=s.history_token_budget,
        summary=conversation.summary if conversation else None,
    )
    input_tokens = chat.input_tokens + sum(m.estimated_tokens() for m in window)
    if reservation is None:  # an upper bound, not the estimate: a client chooses text that beats any estimate
        reservation = _reserve(
            deps, grant, chat.input_bound + sum(m.token_bound() for m in window) + chat.output_tokens
        )
    budget = _Budget(deps, reservation, input_tokens)
    try:
        if s.moderation != "off":
            _moderate(deps, key, chat)
        params = {**chat.params, "messages": [m.to_openai() for m in (*window, *chat.messages)]}
        started = deps.clock()
        response = deps.upstream.open_chat(key, params)  # retries 429/5xx and refused connections here
        turn = _Turn(deps, chat, conversation, started, response, budget)
        if not chat.stream:
            return turn.whole(response)
        chunks = response.chunks()
        first = turn.first_events(chunks)  # errors before the first byte still get a proper status
    except Exception as error:
        budget.fail(error if isinstance(error, SigstreamError) else SigstreamError())
        raise
    return HttpResult(200, dict(SSE_HEADERS), turn.stream(first, chunks))


def _moderate(deps: ChatDeps, key: str, chat: ChatRequest) -> None:
    text = "\n".join(m.text() for m in chat.messages if m.role == "user")
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
        budget: _Budget,
    ) -> None:
        self.deps = deps
        self.budget = budget
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
            logger.warning("upstream failed mid-stream", extra={"kind": error.code, "cause": describe_cause(exc)})
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

    def _reply_message(self) -> Message:
        calls = [self.reply.tool_calls[i] for i in sorted(self.reply.tool_calls)]
        return assistant_reply(self.reply.content, self.reply.refusal, calls)

    def _store(self, status: str) -> None:
        now = self.deps.clock()
        reply = self._reply_message()
        usage = clean_usage(self.reply.usage)
        if usage and ("prompt_tokens" in usage or "completion_tokens" in usage):
            tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        else:  # no usage from the provider: estimate from the text rather than charge nothing
            tokens_in = self.budget.input_tokens
            tokens_out = -(-reply.text_chars() // 4) * self.chat.choices
            if usage and "total_tokens" in usage:
                tokens_in, tokens_out = 0, usage["total_tokens"]
        self.budget.settle(tokens_in + tokens_out)
        if self.first_token_at is not None:
            record("TimeToFirstToken", (self.first_token_at - self.started) * 1000, "Milliseconds")
        record("StreamDuration", (now - self.started) * 1000, "Milliseconds")
        record("TokensIn", tokens_in)
        record("TokensOut", tokens_out)
        note(model=self.reply.model or self.chat.params.get("model"), outcome=status)
        if self.conversation is None:
            return
        model = self.reply.model
        assistant = StoredMessage(
            reply,
            status=status,
            finish_reason=str(self.reply.finish_reason)[:64] if self.reply.finish_reason else None,
            usage=usage,
            model=model[:200] if isinstance(model, str) else None,
            latency_ms=int((now - self.started) * 1000),
        )
        turn = [StoredMessage(m) for m in self.chat.messages] + [assistant]
        try:
            self.deps.store.append_turn(self.conversation, turn, now=now, tokens_in=tokens_in, tokens_out=tokens_out)
        except SigstreamError as exc:
            # The transaction is all-or-nothing: nothing half-written; the loss is logged and counted.
            record("HistoryWriteFailures", 1)
            cause = getattr(exc.__cause__, "code", type(exc.__cause__).__name__)
            logger.error(
                "could not store the turn",
                extra={"error": exc.code, "cause": cause, "conversation_id": self.conversation.id},
            )
