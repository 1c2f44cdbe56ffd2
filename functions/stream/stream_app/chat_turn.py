"""One chat turn: history in, provider stream out to the client, the turn visible from its start and always stored.

On a conversation URL the request is first reconciled with the stored history (chat/history_merge.py); then the
new messages and an `in_progress` reply are written while the provider is called (never delaying the first byte),
the reply is checkpointed and watched for a stop request as it streams (turn_watch.py), and its final write marks
it complete, incomplete or stopped. After the response has ended, a rolling summary may be written
(docs/adr/0009-conversation-turns.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from sigstream.core.errors import (
    BadRequestError,
    ConflictError,
    HistoryConflictError,
    ServiceUnavailableError,
    SigstreamError,
    UpstreamError,
)
from sigstream.core.settings import StreamSettings
from sigstream.core.signed_url import Grant
from stream_app.adapters.history_store import (
    IN_PROGRESS,
    History,
    HistoryStore,
    Reservation,
    StopSignal,
    StoredMessage,
    clean_usage,
    subject_limit_key,
)
from stream_app.adapters.upstream_client import UpstreamClient, UpstreamResponse
from stream_app.chat import fast_json
from stream_app.chat.history_merge import Entry, Merge, merge_history
from stream_app.chat.messages import Message, assistant_reply
from stream_app.chat.policy import ChatPolicy
from stream_app.chat.reply import Reply
from stream_app.chat.request import ChatRequest, check_new_messages, parse_chat_request
from stream_app.chat.sse import DONE, SseParser, error_event, event_data
from stream_app.chat.summary import SummaryPlan, plan_summary, summary_answer, summary_request
from stream_app.chat.window import provider_sequence, select_window, window_start
from stream_app.http_io import SSE_HEADERS, HttpResult, Request, json_result
from stream_app.observability import describe_cause, logger, note, record
from stream_app.turn_watch import TurnWatch, lease_until

# A regenerate's reply block (the assistant and tool messages after the last user message) may be this long and
# still be recognised when the client resends the history up to it.
REGENERATE_SLACK = 16


class LiveEncoder(Protocol):
    """How a turn's live stream is written when it is not OpenAI SSE (the AI SDK's UI message stream, issue 14).

    Without one, the provider's events are forwarded unchanged (with `id:` lines on a conversation turn).
    """

    def event(self, raw: bytes, chunk: dict[str, Any], position: int) -> bytes:
        """Bytes for one provider event (`chunk` parsed; `position`: reply characters so far, the event id)."""
        ...

    def error(self, code: str, message: str) -> bytes:
        """Bytes for a failure after the first byte (the stream then ends with `end("incomplete")`)."""
        ...

    def end(self, status: str) -> bytes:
        """The stream's last bytes once the turn is stored: status complete / incomplete / stopped."""
        ...


# Makes a turn's encoder from its reply's message id (the stored reply's id; None on a stateless URL).
EncoderFactory = Callable[[str | None], LiveEncoder]


@dataclass
class ChatDeps:
    """What a turn needs, wired once per cold start."""

    settings: StreamSettings
    store: HistoryStore
    upstream: UpstreamClient
    provider_key: Callable[[], str]
    clock: Callable[[], float]
    pool: Executor
    watchers: Executor  # runs each streaming turn's TurnWatch for the whole stream
    # The provider key when the cache holds a fresh one (no I/O), else None: the warm path skips a thread handoff.
    cached_provider_key: Callable[[], str | None] = lambda: None
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


def _give_back_nonce(deps: ChatDeps, grant: Grant) -> None:
    """A refused request does not use up a single-use URL: the client may retry it once the refusal is gone."""
    if not grant.nonce:
        return
    try:
        deps.store.release_nonce(grant.nonce)
    except Exception as exc:  # the refusal is what the client must see; a lost release only costs a new URL
        logger.warning("could not give back a single-use URL", extra={"error": type(exc).__name__})


def _together(pool: Executor, jobs: dict[str, Callable[[], Any]]) -> dict[str, Future[Any]]:
    """Run the jobs at once: all but the last on the pool, the last on this thread (one handoff fewer)."""
    names = list(jobs)
    futures = {name: pool.submit(jobs[name]) for name in names[:-1]}
    if names:
        here: Future[Any] = Future()
        try:
            here.set_result(jobs[names[-1]]())
        except Exception as exc:
            here.set_exception(exc)
        futures[names[-1]] = here
    for future in futures.values():
        future.exception()  # waits
    return futures


def _gather(deps: ChatDeps, grant: Grant, chat: ChatRequest) -> tuple[str, History | None, Reservation | None]:
    """Key, rate/budget reservation (stateless) or history, and nonce in parallel: one round trip of latency."""
    subject, conversation_id = grant.subject, grant.conversation_id
    s = deps.settings
    key = deps.cached_provider_key()
    jobs: dict[str, Callable[[], Any]] = {} if key is not None else {"key": deps.provider_key}
    if grant.nonce:
        jobs["nonce"] = partial(deps.store.consume_nonce, grant.nonce, grant.expires + 60)
    if conversation_id:  # the reservation needs the history window's size: it follows the load
        want = max(s.history_max_messages, len(chat.messages) + REGENERATE_SLACK)
        jobs["history"] = partial(deps.store.load_history, conversation_id, subject, want)
    else:
        jobs["reservation"] = partial(_reserve, deps, grant, chat.input_bound + chat.output_tokens)
    done = _together(deps.pool, jobs)
    # Report the most meaningful failure: used nonce, rate limit, unknown conversation, then availability.
    errors = [e for e in (f.exception() for f in done.values()) if e]
    if errors:
        if "reservation" in done and done["reservation"].exception() is None:
            _Budget(deps, done["reservation"].result(), 0).settle(0)
        if "nonce" in done and done["nonce"].exception() is None:
            _give_back_nonce(deps, grant)
        for error in sorted(errors, key=lambda e: getattr(e, "status", 999) == 503):
            if isinstance(error, SigstreamError):
                raise error
            raise ServiceUnavailableError("a dependency failed") from error
    if key is None:
        key = done["key"].result()
    history = done["history"].result() if conversation_id else None
    reservation = done["reservation"].result() if "reservation" in done else None
    return key, history, reservation


@dataclass
class _Plan:
    """What goes to the provider, and what the conversation turn stores."""

    chat: ChatRequest
    messages: list[Message]  # the window, then the new messages, as a valid provider sequence
    history: History | None = None
    merge: Merge | None = None
    kept: list[StoredMessage] = field(default_factory=list)  # the active history the turn follows

    @property
    def superseded(self) -> list[StoredMessage]:
        ids = set(self.merge.superseded) if self.merge else set()
        return [m for m in self.history.messages if m.id in ids] if self.history else []


def _plan(
    deps: ChatDeps, chat: ChatRequest, history: History | None, check: Callable[[Merge], None] | None = None
) -> _Plan:
    s = deps.settings
    if history is None:  # stateless: forwarded as sent
        return _Plan(chat, list(chat.messages))
    now = deps.clock()
    active = history.active()
    merge = merge_history(
        [Entry(m.id, m.message, m.live(now)) for m in active], chat.messages, complete=history.complete
    )
    note(merge=merge.kind)
    if check is not None:  # a wire format whose requests say what they mean (useChat's trigger)
        check(merge)
    chat = check_new_messages(chat, merge.new, deps.policy)
    kept = active[: merge.base]
    # Another turn's reply still being written is not context for this one (it is half a message).
    context = [m.message for m in kept if not m.live(now)]
    summary = history.conversation.summary if s.summary_max_tokens else None
    window = select_window(
        context, max_messages=s.history_max_messages, token_budget=s.history_token_budget, summary=summary
    )
    return _Plan(chat, provider_sequence([*window, *merge.new]), history, merge, kept)


def chat_turn(
    request: Request,
    grant: Grant,
    deps: ChatDeps,
    deadline: float | None = None,
    encoder: EncoderFactory | None = None,
    chat: ChatRequest | None = None,
    check_merge: Callable[[Merge], None] | None = None,
) -> HttpResult:
    """POST /v1/chat/completions (and, with another `encoder` and a parsed `chat`, any chat wire format).

    `check_merge` may refuse (raise) what the history merge decided, for a format that says what it means.
    """
    if chat is None:
        chat = parse_chat_request(request.body, request.headers.get("content-type", ""), grant, deps.policy)
    key, history, reservation = _gather(deps, grant, chat)
    try:
        plan = _plan(deps, chat, history, check_merge)
        chat = plan.chat
        input_tokens = chat.extra_tokens + sum(m.estimated_tokens() for m in plan.messages)
        if reservation is None:  # an upper bound, not the estimate: a client chooses text that beats any estimate
            bound = chat.extra_bound + sum(m.token_bound() for m in plan.messages) + chat.output_tokens
            reservation = _reserve(deps, grant, bound)
    except SigstreamError as error:
        if error.status < 500:  # refused (history conflict, rate limit, budget): nothing was used
            _give_back_nonce(deps, grant)
        raise
    budget = _Budget(deps, reservation, input_tokens)
    turn = _Turn(deps, grant, plan, key, budget, deadline)
    try:
        if deps.settings.moderation != "off":
            _moderate(deps, key, chat)
        params = {**chat.params, "messages": [m.to_openai() for m in plan.messages]}
        turn.prepare()
        if encoder is not None:
            turn.encoder = encoder(turn.placeholder.id if turn.placeholder else None)
        turn.started = deps.clock()
        # Retries 429/5xx and refused connections. The turn's first write starts once the request is out, so it
        # overlaps the provider's wait and never the first byte's path.
        response = deps.upstream.open_chat(key, params, on_sent=turn.begin)
        turn.attach(response)
        if not chat.stream:
            return turn.whole(response)
        chunks = response.chunks()
        first = turn.first_events(chunks)  # errors before the first byte still get a proper status
        turn.check_begun()
    except Exception as error:
        turn.abandon()
        budget.fail(error if isinstance(error, SigstreamError) else SigstreamError())
        raise
    return HttpResult(200, dict(SSE_HEADERS), turn.stream(first, chunks), after=turn.after)


def _moderate(deps: ChatDeps, key: str, chat: ChatRequest) -> None:
    text = "\n".join(m.text() for m in chat.messages if m.role == "user")
    if not text:
        return  # tool results and regenerates bring no new user text
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
        self, deps: ChatDeps, grant: Grant, plan: _Plan, key: str, budget: _Budget, deadline: float | None
    ) -> None:
        self.deps = deps
        self.grant = grant
        self.plan = plan
        self.chat = plan.chat
        self.key = key
        self.budget = budget
        self.deadline = deadline
        self.conversation = plan.history.conversation if plan.history else None
        self.started = deps.clock()
        self.response: UpstreamResponse | None = None
        self.reply = Reply()
        self.parser = SseParser()
        self.first_token_at: float | None = None
        self.saw_done = False
        self.ids = self.conversation is not None  # event ids name reply positions, for the resume route
        self.stored: list[StoredMessage] = []
        self.placeholder: StoredMessage | None = None
        self.begun: Future[None] | None = None
        self.watch: TurnWatch | None = None
        self.stop_signal: StopSignal | None = None
        self._stop_lock = threading.Lock()
        self.summary: SummaryPlan | None = None
        self.encoder: LiveEncoder | None = None
        self._chunk: dict[str, Any] = {}

    # --- the stored turn ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The turn's messages and its `in_progress` reply, with their ids (conversation turns)."""
        if self.conversation is None:
            return
        now = self.deps.clock()
        created = int(now)
        self.placeholder = StoredMessage(
            Message("assistant", ""),
            status=IN_PROGRESS,
            created_at=created,
            lease_until=lease_until(now, self.deadline),
        )
        self.stored = [StoredMessage(m, created_at=created) for m in self.chat.messages] + [self.placeholder]

    def begin(self) -> None:
        """Write the prepared messages and reply in the background (once, however often the request is sent)."""
        if self.conversation is None or self.placeholder is None or self.begun is not None:
            return
        now = self.deps.clock()
        # A resend says what the stored history is: when another turn got in first, that is no longer true, so
        # the begin write does not go after it (only new messages do; a regenerate's marks conflict anyway).
        follow = self.plan.merge is None or self.plan.merge.kind == "only_new"
        self.begun = self.deps.pool.submit(
            self.deps.store.append_turn,
            self.conversation,
            self.stored,
            now=now,
            tokens_in=0,
            tokens_out=0,
            superseded=self.plan.superseded,
            follow=follow,
        )

    def check_begun(self) -> None:
        """At the first byte: a resend whose history changed meanwhile is a 409 (not waited for if still writing).

        The begin write takes milliseconds and a provider's first token far longer, so it is nearly always done;
        when it is not, the turn goes on and the final write stores it after the other turn.
        """
        if self.begun is None or not self.begun.done() or self.plan.merge is None:
            return
        if self.plan.merge.kind == "resent" and isinstance(self.begun.exception(), ConflictError):
            raise HistoryConflictError(
                "another turn was stored after the history this request resends; read the history and send it "
                "again, or send only the new messages",
                param="messages",
            )

    def attach(self, response: UpstreamResponse) -> None:
        """The provider answered: watch the reply (checkpoints, stop requests) while it streams."""
        self.response = response
        if self.placeholder is None or self.begun is None or self.conversation is None:
            return
        self.watch = TurnWatch(
            self.deps.store,
            self.conversation.id,
            self.placeholder,
            self.begun,
            self.reply.text_so_far,
            self._on_stop,
            self.deps.watchers,
            clock=self.deps.clock,
            deadline=self.deadline,
            checkpoints=self.chat.stream,
        )
        self.watch.start()

    def _on_stop(self, signal: StopSignal) -> None:
        """From the watcher's thread: a stop was requested (or the reply is gone): end the upstream transfer."""
        if not self.chat.stream:
            return  # a whole answer cannot be cut short usefully: it is stored complete
        with self._stop_lock:
            self.stop_signal = signal
        if self.response is not None:
            self.response.abort()

    @property
    def stopped(self) -> bool:
        return self.stop_signal is not None

    def abandon(self) -> None:
        """The turn failed before any answer: the client got an error, so the history must not keep it."""
        if self.watch is not None:
            self.watch.stop()
        if self.response is not None:
            self.response.close()
        if self.begun is None or self.conversation is None:
            return
        try:
            self.begun.result()
        except Exception:
            return  # nothing was stored
        try:
            self.deps.store.rollback_turn(self.conversation, self.stored, self.plan.superseded)
        except Exception as exc:  # the reply left in progress runs out its lease and reads as incomplete
            record("HistoryWriteFailures", 1)
            logger.error("could not undo a failed turn", extra={"error": type(exc).__name__})

    # --- relaying -------------------------------------------------------------------------------------

    def whole(self, response: UpstreamResponse) -> HttpResult:
        try:
            doc = json.loads(response.read())
        except ValueError as exc:
            raise UpstreamError("the provider sent a malformed answer") from exc
        finally:
            response.close()
        if not isinstance(doc, dict):
            raise UpstreamError("the provider sent a malformed answer")
        self.reply.add_completion(doc)
        self._finish("complete")
        return json_result(200, doc, after=self.after)

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
        self._chunk = chunk
        self.reply.add_chunk(chunk)
        if self.first_token_at is None:
            self.first_token_at = self.deps.clock()
        if not self.chat.usage_requested and not chunk.get("choices") and chunk.get("usage"):
            return False  # usage was forced for our records; this client did not ask for it
        return True

    def _events(self, data: bytes) -> bytes:
        """The bytes to forward for one read: the read itself when it is whole events that all go through.

        On a conversation turn each event gets an `id:` line first (the reply's length so far, which
        `Last-Event-ID` hands back to the resume route); the event's own bytes are never re-serialised.
        """
        had_partial = self.parser.pending
        events = self.parser.feed(data)
        if self.encoder is not None:
            encode = self.encoder.event
            return b"".join(encode(raw, self._chunk, self.reply.chars) for raw in events if self._accept(raw))
        if self.ids:
            return b"".join(b"id: %d\n" % self.reply.chars + raw for raw in events if self._accept(raw))
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
            self._close()
            raise _as_error(exc) from exc
        self._close()
        if self.stopped:
            return b""  # stopped before any answer: the stream is only [DONE]
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
            yield DONE if self.encoder is None else self.encoder.end(status)
        finally:
            if not finished:  # GeneratorExit: the Runtime API connection broke mid-stream
                self._finish("incomplete")

    def _relay(self, first: bytes, chunks: Iterator[bytes]) -> Generator[bytes, None, str]:
        if first:
            yield first
        if self.stopped:
            return "stopped"
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
            flushed = self.parser.flush()  # a last event without its blank line
            if self.encoder is not None:
                encode = self.encoder.event
                pending += [encode(raw, self._chunk, self.reply.chars) for raw in flushed if self._accept(raw)]
            else:
                pending += [raw for raw in flushed if self._accept(raw)]
        except Exception as exc:
            if self.stopped:
                return "stopped"
            error = _as_error(exc)
            record("StreamErrors", 1, kind=error.code)
            logger.warning("upstream failed mid-stream", extra={"kind": error.code, "cause": describe_cause(exc)})
            yield b"".join([*pending, self._error(error.code, error.message)])
            return "incomplete"
        if self.stopped and not self.saw_done:
            if any(pending):
                yield b"".join(pending)  # what was read is sent (and stored) before the stream ends
            return "stopped"
        if not self.saw_done:
            pending.append(self._error("upstream_error", "the provider ended the stream early"))
        if any(pending):
            yield b"".join(pending)
        return "complete" if self.saw_done else "incomplete"

    def _error(self, code: str, message: str) -> bytes:
        return error_event(code, message) if self.encoder is None else self.encoder.error(code, message)

    def _close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.response is not None:
            self.response.close()

    def _finish(self, status: str) -> None:
        self._close()
        self._store(status)

    def _reply_message(self, status: str) -> Message:
        content = self.reply.content
        if status != "complete":
            signal = self.stop_signal
            if signal is not None and signal.stop_at is not None and 0 <= signal.stop_at < len(content):
                content = content[: signal.stop_at]  # exactly what the stopping client had read
            return assistant_reply(content, self.reply.refusal, [])  # half a tool call is no tool call
        calls = [self.reply.tool_calls[i] for i in sorted(self.reply.tool_calls)]
        return assistant_reply(content, self.reply.refusal, calls)

    def _store(self, status: str) -> None:
        now = self.deps.clock()
        reply = self._reply_message(status)
        usage = clean_usage(self.reply.usage)
        if usage and ("prompt_tokens" in usage or "completion_tokens" in usage):
            tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        else:  # no usage from the provider: estimate from the text rather than charge nothing
            tokens_in = self.budget.input_tokens
            tokens_out = -(-max(reply.text_chars(), len(self.reply.text_so_far())) // 4) * self.chat.choices
            if usage and "total_tokens" in usage:
                tokens_in, tokens_out = 0, usage["total_tokens"]
        self.budget.settle(tokens_in + tokens_out)
        if self.first_token_at is not None:
            record("TimeToFirstToken", (self.first_token_at - self.started) * 1000, "Milliseconds")
        record("StreamDuration", (now - self.started) * 1000, "Milliseconds")
        record("TokensIn", tokens_in)
        record("TokensOut", tokens_out)
        if self.watch is not None:
            record("Checkpoints", self.watch.checkpoints)
            record("StopChecks", self.watch.polls)
        if status == "stopped":
            record("TurnsStopped", 1)
        note(model=self.reply.model or self.chat.params.get("model"), outcome=status)
        if self.conversation is None or (self.stop_signal is not None and self.stop_signal.gone):
            return  # stateless; or the reply is gone (its conversation was deleted while it streamed)
        model = self.reply.model
        final = StoredMessage(
            reply,
            status=status,
            finish_reason=str(self.reply.finish_reason)[:64] if self.reply.finish_reason else None,
            usage=usage,
            model=model[:200] if isinstance(model, str) else None,
            latency_ms=int((now - self.started) * 1000),
        )
        try:
            self._write(final, now, tokens_in, tokens_out)
        except SigstreamError as exc:
            # Each write is all-or-nothing: nothing half-written; the loss is logged and counted.
            record("HistoryWriteFailures", 1)
            cause = getattr(exc.__cause__, "code", type(exc.__cause__).__name__)
            logger.error(
                "could not store the turn",
                extra={"error": exc.code, "cause": cause, "conversation_id": self.conversation.id},
            )
            return
        self.summary = self._summary_plan()

    def _write(self, final: StoredMessage, now: float, tokens_in: int, tokens_out: int) -> None:
        """The final write: over the reply stored in progress, or the whole turn when that write had failed."""
        if self.conversation is None or self.placeholder is None:
            return
        try:
            if self.begun is None:
                raise ServiceUnavailableError("the turn's first write never started")
            self.begun.result()
        except Exception as exc:
            logger.warning("the turn could not be stored at its start", extra={"error": type(exc).__name__})
            self.stored[-1] = final
            self.deps.store.append_turn(
                self.conversation,
                self.stored,
                now=now,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                superseded=self.plan.superseded,
            )
            return
        final.id, final.seq, final.created_at = self.placeholder.id, self.placeholder.seq, self.placeholder.created_at
        self.stored[-1] = final
        store, conversation = self.deps.store, self.conversation
        honour = self.chat.stream and final.status != "stopped"  # a whole answer was delivered whole: no stop
        signal = store.finish_turn(
            conversation, final, now=now, tokens_in=tokens_in, tokens_out=tokens_out, honour_stop=honour
        )
        if signal is not None:  # Stop came after the watcher's last look: kept as the stopping client saw it
            self.stop_signal = signal
            final.message, final.status = self._reply_message("stopped"), "stopped"
            record("TurnsStopped", 1)
            store.finish_turn(conversation, final, now=now, tokens_in=tokens_in, tokens_out=tokens_out)

    # --- after the response -----------------------------------------------------------------------------

    def _summary_plan(self) -> SummaryPlan | None:
        """What the next window leaves out that the summary does not hold yet (None: nothing to summarise)."""
        s = self.deps.settings
        if not s.summary_max_tokens or self.conversation is None:
            return None
        history = [(m.seq, m.message) for m in (*self.plan.kept, *self.stored) if m.status != IN_PROGRESS]
        start = window_start(
            [m for _, m in history], max_messages=s.history_max_messages, token_budget=s.history_token_budget
        )
        return plan_summary(
            history, start, summary=self.conversation.summary, summary_through=self.conversation.summary_through
        )

    def after(self) -> None:
        """Once the client has the whole response: the rolling summary (a non-streaming provider call)."""
        plan, conversation = self.summary, self.conversation
        if plan is None or conversation is None:
            return
        s = self.deps.settings
        model = str(self.chat.params.get("model") or s.default_model)
        doc = summary_request(
            plan, model=model, max_tokens=s.summary_max_tokens, tokens_parameter=s.output_tokens_parameter
        )
        try:
            completion = self.deps.upstream.post_json("/chat/completions", self.key, doc)
            text, tokens = summary_answer(completion)
            if not tokens:
                tokens = -(-len(json.dumps(doc["messages"])) // 4) + -(-len(text or "") // 4)
            self.deps.store.charge(subject_limit_key(self.grant.subject), self.deps.clock(), tokens)
            if text:
                self.deps.store.save_summary(conversation, text, plan.through, self.deps.clock())
                record("SummariesWritten", 1)
        except Exception as exc:  # the turn is delivered and stored; the next turn tries again
            record("SummaryFailures", 1)
            logger.warning("could not write the rolling summary", extra={"cause": describe_cause(exc)})
