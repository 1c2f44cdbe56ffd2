"""An invocation as the local stack tracks it, and the events its response produces."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResponseStart:
    """The runtime began POSTing /response."""

    content_type: str
    streaming: bool


@dataclass(frozen=True)
class ResponseData:
    """One chunk of response body, as it arrived."""

    data: bytes


@dataclass(frozen=True)
class ResponseEnd:
    """The response finished; error fields are set from trailers or a cut-off stream."""

    error_type: str | None = None
    error_body: bytes | None = None


@dataclass(frozen=True)
class InvocationFailed:
    """No response: /error, init failure, crash or timeout before the first byte."""

    error_type: str
    body: bytes


Event = ResponseStart | ResponseData | ResponseEnd | InvocationFailed


@dataclass
class Invocation:
    """One request to a function, from queueing to the last response byte."""

    event: bytes
    timeout: float
    trace_id: str = ""
    client_context: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invocation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline_ms: int = 0
    started: bool = False  # a /response began
    finished: bool = False
    owner: object | None = None
    events: queue.SimpleQueue[Event] = field(default_factory=queue.SimpleQueue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, owner: object) -> None:
        """An environment took it: the function timeout starts now."""
        self.owner = owner
        self.deadline_ms = int((time.time() + self.timeout) * 1000)

    def emit(self, event: Event) -> bool:
        """Publish an event unless the invocation already finished; returns whether it was taken."""
        with self.lock:
            if self.finished:
                return False
            if isinstance(event, (ResponseEnd, InvocationFailed)):
                self.finished = True
            elif isinstance(event, ResponseStart):
                self.started = True
            self.events.put(event)
            return True

    def fail(self, error_type: str, message: str) -> None:
        """End the invocation with an error, as a cut stream if bytes already went out."""
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        with self.lock:
            started = self.started
        self.emit(ResponseEnd(error_type, body) if started else InvocationFailed(error_type, body))
