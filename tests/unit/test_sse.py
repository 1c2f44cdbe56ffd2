"""SSE parsing: incremental, any line ending, and never anything but events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream_app.chat.sse import SseParser, error_event, event_data, frame


def _all(parser: SseParser, parts: list[bytes]) -> list[tuple[str, bytes]]:
    raws = [raw for part in parts for raw in parser.feed(part)] + parser.flush()
    return [(data, raw) for raw in raws if (data := event_data(raw)) is not None]


def test_events_split_across_reads_come_out_whole_and_byte_exact() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    for cut in range(1, len(stream)):
        events = _all(SseParser(), [stream[:cut], stream[cut:]])
        assert [d for d, _ in events] == ['{"a":1}', '{"b":2}', "[DONE]"]
        assert b"".join(r for _, r in events) == stream


def test_crlf_multiline_and_comments() -> None:
    events = _all(SseParser(), [b": keep-alive\r\n\r\nevent: x\r\ndata: one\r\ndata: two\r\n\r\n"])
    assert [d for d, _ in events] == ["one\ntwo"]


def test_cut_stream_flushes_the_last_partial_event() -> None:
    assert [d for d, _ in _all(SseParser(), [b"data: partial"])] == ["partial"]


def test_runaway_event_is_dropped_not_buffered_forever() -> None:
    parser = SseParser(max_event_bytes=100)
    assert parser.feed(b"data: " + b"x" * 200) == []
    assert [event_data(raw) for raw in parser.feed(b"data: ok\n\n")] == ["ok"]


def test_framing() -> None:
    assert frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert error_event("upstream_error", "cut").startswith(b'data: {"error":{"message":"cut"')


@given(st.lists(st.binary(max_size=80), max_size=20))
def test_parser_never_raises(parts: list[bytes]) -> None:
    for event in _all(SseParser(), parts):
        assert isinstance(event[0], str)
