"""`make fuzz`: atheris over the parsers that face the internet. Any exception but our own is a crash.

Usage: python tests/fuzz/fuzz_entry_points.py <target> [libFuzzer flags], target in TARGETS.
"""

from __future__ import annotations

import json
import sys

import atheris

from local.url_event import PreludeError, PreludeReader
from sigstream.core.errors import SigstreamError
from sigstream.core.signed_url import Grant, verify_query
from sigstream.core.sw1 import Sw1App, verify_sw1
from stream_app.chat.policy import ChatPolicy
from stream_app.chat.request import parse_chat_request
from stream_app.chat.sse import SseParser
from stream_app.http_io import parse_event
from stream_app.sw1_proxy import _normalise

KEYS = {"k1": b"0123456789abcdef0123456789abcdef"}
APPS = {"app": Sw1App("app", "secret", ("*",))}
GRANT = Grant("POST", "/v1/chat/completions", "u", 0, 10, models=("m",), max_tokens=5)


def signed_url(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        verify_query(method="POST", path="/v1/chat/completions", raw_query=text, keys=KEYS, now=5, max_lifetime=3600)
    except SigstreamError:
        pass


def sw1(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    query = fdp.ConsumeUnicodeNoSurrogates(400)
    headers = [
        (fdp.ConsumeUnicodeNoSurrogates(20), fdp.ConsumeUnicodeNoSurrogates(40))
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    ]
    body = fdp.ConsumeBytes(200)
    try:
        verify_sw1(
            method="POST",
            raw_query=query,
            headers=headers,
            read_body=lambda n: body[: n + 1],
            apps=APPS,
            normalise_url=_normalise,
            now=1.7e9,
            max_body=1024,
        )
    except SigstreamError:
        pass


def event(data: bytes) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        parse_event(doc, max_body=1024)
    except SigstreamError:
        pass


def chat_body(data: bytes) -> None:
    try:
        parse_chat_request(data, "application/json", GRANT, ChatPolicy("m"))
    except SigstreamError:
        pass


def sse(data: bytes) -> None:
    parser = SseParser(max_event_bytes=4096)
    for cut in (len(data) // 3, len(data)):
        list(parser.feed(data[:cut]))
    list(parser.flush())


def prelude(data: bytes) -> None:
    try:
        PreludeReader().feed(data)
    except PreludeError:
        pass


TARGETS = {"signed_url": signed_url, "sw1": sw1, "event": event, "chat_body": chat_body, "sse": sse, "prelude": prelude}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.instrument_all()  # coverage feedback for everything loaded (our parsers included)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
