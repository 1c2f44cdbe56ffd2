"""An embedded OpenAI-compatible upstream: echoes or replays recorded streams, with fault switches for tests."""

from __future__ import annotations

import json
import select
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from local.quiet_server import QuietThreadingHTTPServer

MODEL = "local-echo-1"


@dataclass
class UpstreamControl:
    """Test switches: queued faults, a recorded stream to replay, pacing, cuts and stalls."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    replay: str | None = None
    reply: str | None = None
    delay_ms: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0
    tool_call: dict[str, Any] | None = None
    summary: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)  # when a client closed a stream before its end
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, changes: Any) -> None:
        """Apply a POST /_control body; {"reset": true} clears everything first. ValueError names a bad key."""
        _check_changes(changes)
        with self.lock:
            if changes.get("reset"):
                self.faults, self.replay, self.reply, self.requests = [], None, None, []
                self.delay_ms, self.cut_after, self.stall_after, self.stall_seconds = 0.0, None, None, 0.0
                self.tool_call, self.summary, self.disconnects = None, None, []
            for key in (
                "faults",
                "replay",
                "reply",
                "delay_ms",
                "cut_after",
                "stall_after",
                "stall_seconds",
                "tool_call",
                "summary",
            ):
                if key in changes:
                    setattr(self, key, changes[key])

    def next_fault(self, endpoint: str = "chat") -> dict[str, Any] | None:
        """Pop the next queued fault for this endpoint ("chat" unless the fault names "moderations")."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.get("endpoint", "chat") == endpoint:
                    return self.faults.pop(index)
            return None


_NUMBERS = {"delay_ms": False, "cut_after": True, "stall_after": True, "stall_seconds": False}  # key: null allowed


def _check_changes(changes: Any) -> None:
    """A typo (`delay`), a wrong type or a replay file that is not there is refused, not silently ignored."""
    if not isinstance(changes, dict):
        raise ValueError("the body must be a JSON object of controls (see the README's embedded upstream)")
    known = {"reset", "faults", "replay", "reply", "tool_call", "summary", *_NUMBERS}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown control {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, nullable in _NUMBERS.items():
        value = changes.get(key)
        if key in changes and not (value is None and nullable):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
    faults = changes.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise ValueError("faults must be a list of objects")
    for key in ("replay", "reply", "summary"):
        if changes.get(key) is not None and not isinstance(changes[key], str):
            raise ValueError(f"{key} must be a string")
    call = changes.get("tool_call")
    if call is not None and not (
        isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments", "{}"), str)
    ):
        raise ValueError('tool_call must be {"name": "<tool>", "arguments": "<JSON text>"}')
    if changes.get("replay") and not Path(changes["replay"]).is_file():
        raise ValueError(f"replay file {changes['replay']} not found (relative paths start at {Path.cwd()})")


def _words(text: str) -> list[str]:
    """Split text into word-sized deltas that concatenate back to it."""
    parts, current = [], ""
    for ch in text:
        current += ch
        if ch == " ":
            parts.append(current)
            current = ""
    return parts + ([current] if current else [])


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic answer: names the turn count and echoes the last user message."""
    users = [m for m in messages if m.get("role") == "user"]
    last = _text_of(users[-1].get("content")) if users else ""
    return f"Echo ({len(messages)} messages): {last}"


def sse_events(reply: str, model: str, include_usage: bool, prompt_tokens: int) -> list[bytes]:
    """OpenAI chat.completion.chunk events for a reply, ending in [DONE]."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        doc: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            doc["usage"] = usage
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    words = _words(reply)
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": w}) for w in words]
    events.append(chunk({}, "stop"))
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        events.append(chunk({}, usage={**usage, "total_tokens": prompt_tokens + len(words)}))
    return [*events, b"data: [DONE]\n\n"]


def tool_call_events(call: dict[str, Any], model: str, include_usage: bool, prompt_tokens: int) -> list[bytes]:
    """A streamed assistant reply that calls one tool (its arguments in two deltas), ending in [DONE]."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    call_id = "call_" + uuid.uuid4().hex[:20]
    arguments = str(call.get("arguments", "{}"))
    half = len(arguments) // 2

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        doc = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": call["name"], "arguments": ""}}
    events = [
        chunk({"role": "assistant", "content": None, "tool_calls": [opening]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5}
        doc = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
        events.append(b"data: " + json.dumps({**doc, "usage": usage}).encode() + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def _wants_tool(body: dict[str, Any], call: dict[str, Any] | None) -> bool:
    """The tool_call control answers a request that offers tools, until a tool result is the last message."""
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    return call is not None and bool(body.get("tools")) and last.get("role") != "tool"


def replay_events(path: Path) -> list[bytes]:
    """A recorded SSE file split into its events, byte for byte."""
    raw = path.read_bytes()
    return [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip()]


class FakeProvider(QuietThreadingHTTPServer):
    """The local provider, on its own loopback port."""

    daemon_threads = True

    def __init__(self, api_key: str, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _UpstreamHandler)
        self.api_key = api_key
        self.control = UpstreamControl()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends in /v1)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FakeProvider

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": code, "param": None, "code": code}}, headers)

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def do_GET(self) -> None:
        if self.path == "/_control/requests":
            with self.server.control.lock:
                self._json(200, list(self.server.control.requests))
        elif self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "local"}]})
        else:
            self._error(404, "not found", "not_found")

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_control":
            try:
                self.server.control.update(body)
            except ValueError as exc:
                self._error(400, str(exc), "invalid_request_error")
                return
            self._json(200, {"ok": True})
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return
        if not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
            return
        if self.path.endswith("/moderations"):
            fault = self.server.control.next_fault("moderations")
            if fault:
                self._error(int(fault.get("status", 500)), "moderation fault", "server_error")
                return
            text = json.dumps(body.get("input", ""))
            flagged = "FLAG_ME" in text
            self._json(200, {"id": "modr-local", "model": "omni-moderation-latest", "results": [{"flagged": flagged}]})
            return
        if not self.path.endswith("/chat/completions"):
            self._error(404, "not found", "not_found")
            return
        control = self.server.control
        with control.lock:
            control.requests.append({"headers": dict(self.headers.items()), "body": body, "at": time.time()})
        fault = control.next_fault()
        if fault:
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
            self._error(int(fault.get("status", 500)), fault.get("message", "upstream fault"), "server_error", headers)
            return
        self._complete(body)

    def _complete(self, body: dict[str, Any]) -> None:
        control = self.server.control
        messages = body.get("messages") or []
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) + 3 for m in messages if isinstance(m, dict))
        reply = control.reply or echo_reply([m for m in messages if isinstance(m, dict)])
        model = str(body.get("model") or MODEL)
        if not body.get("stream") and control.summary is not None:
            reply = control.summary  # the rolling summary's call is the only non-streamed chat call we make
        if not body.get("stream"):
            words = len(_words(reply))
            self._json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": words,
                        "total_tokens": prompt_tokens + words,
                    },
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if control.replay:
            events = replay_events(Path(control.replay))
        elif control.tool_call is not None and _wants_tool(body, control.tool_call):
            events = tool_call_events(control.tool_call, model, include_usage, prompt_tokens)
        else:
            events = sse_events(reply, model, include_usage, prompt_tokens)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, event in enumerate(events):
            if control.cut_after is not None and index >= control.cut_after:
                self.close_connection = True
                self.connection.shutdown(2)  # reset mid-stream, no terminating chunk
                return
            if (
                control.stall_after is not None
                and index == control.stall_after
                and not self._wait(control.stall_seconds)
            ):
                return
            if index and control.delay_ms and not self._wait(control.delay_ms / 1000):
                return
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            except OSError:
                self._gone()
                return
        self.wfile.write(b"0\r\n\r\n")

    def _wait(self, seconds: float) -> bool:
        """Pause between events, watching the connection: False (and the time noted) once the client closed it."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    data = self.connection.recv(1, 0x02)  # MSG_PEEK: a request pipelined after this one stays
                except OSError:
                    data = b""
                if not data:
                    self._gone()
                    return False
                time.sleep(min(left, 0.05))
        return True

    def _gone(self) -> None:
        with self.server.control.lock:
            self.server.control.disconnects.append(time.time())
        self.close_connection = True
