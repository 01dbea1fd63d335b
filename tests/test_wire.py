"""Wire formats: SSE splitting in every framing, router error bodies in every shape."""

from __future__ import annotations

import json

import pytest

from gateway import wire
from gateway.wire import SSEParser, parse_upstream_error


def _feed_all(pieces: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    events: list[bytes] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


STREAM = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
EXPECTED = [b'{"a":1}', b'{"b":2}', b"[DONE]"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_sse_line_ends(newline: bytes) -> None:
    """LF, CRLF and CR line ends all split into the same events."""
    body = STREAM.replace(b"\n", newline)
    assert _feed_all([body]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_sse_split_at_every_byte(newline: bytes) -> None:
    """Events cut across chunks at any byte (inside a CRLF too) come out whole and in order."""
    body = STREAM.replace(b"\n", newline)
    assert _feed_all([body[i : i + 1] for i in range(len(body))]) == EXPECTED


def test_sse_cr_stream_last_event_comes_out_at_body_end() -> None:
    """A trailing CR may be half a CRLF, so the last event of a CR-only stream waits; the end
    of the body (``close``) makes it a line end and delivers the event."""
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\r\rdata: [DONE]\r\r') == [b'{"a":1}']
    assert parser.close() == [b"[DONE]"]
    assert parser.pending() == b""


def test_sse_close_delivers_nothing_twice() -> None:
    parser = SSEParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.close() == []
    cut = SSEParser()
    assert cut.feed(b'data: {"a"') == []
    assert cut.close() == []  # an event without its blank line is dropped at the end


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_sse_split_in_two_anywhere(cut: int) -> None:
    assert _feed_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_sse_crlf_split_between_cr_and_lf() -> None:
    """A CRLF cut in the middle is one line end, not an empty line (no event is lost/doubled)."""
    events = _feed_all([b'data: {"a":1}\r', b"\n\r", b'\ndata: {"b":2}\r\n\r\n'])
    assert events == [b'{"a":1}', b'{"b":2}']


def test_sse_comments_and_other_fields_are_ignored() -> None:
    body = (
        b": keep-alive\n\n"
        b'event: message\nid: 7\nretry: 100\ndata: {"a":1}\n\n'
        b':comment inside\ndata: {"b":2}\n\n'
    )
    assert _feed_all([body]) == [b'{"a":1}', b'{"b":2}']


def test_sse_multi_line_data_is_joined_with_newlines() -> None:
    body = b'data: {"a":\ndata: 1}\n\ndata:no-space\n\n'
    assert _feed_all([body]) == [b'{"a":\n1}', b"no-space"]


def test_sse_event_cut_off_stays_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert parser.pending() == b'data: {"b"'


def test_sse_payload_keeps_its_bytes() -> None:
    """Payload bytes (UTF-8, spaces, colons) pass through unchanged."""
    payload = '{"content":"héllo: wörld  ✓"}'.encode()
    assert _feed_all([b"data: " + payload + b"\n\n"]) == [payload]


# -- router error bodies ---------------------------------------------------------------------

HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

ERROR_CASES = [
    (
        "object",
        400,
        b'{"error":{"message":"The requested model \'x/y\' is not supported by any provider '
        b'you have enabled.","type":"invalid_request_error","param":"model",'
        b'"code":"model_not_supported"}}',
        (
            "The requested model 'x/y' is not supported by any provider you have enabled.",
            "invalid_request_error",
            "model_not_supported",
        ),
    ),
    (
        "object without code",
        503,
        b'{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}',
        ("overloaded", "server_error", None),
    ),
    (
        "object without message",
        500,
        b'{"error":{"type":"server_error"}}',
        ("upstream error 500", "server_error", None),
    ),
    (
        "object with a numeric code",
        429,
        b'{"error":{"message":"slow down","code":429}}',
        ("slow down", None, None),
    ),
    (
        "string",
        401,
        b'{"error":"Invalid username or password."}',
        ("Invalid username or password.", None, None),
    ),
    ("message key", 500, b'{"message":"boom"}', ("boom", None, None)),
    ("detail key", 422, b'{"detail":"bad field"}', ("bad field", None, None)),
    ("html", 502, HTML_502, ("502 Bad Gateway 502 Bad Gateway", None, None)),
    ("text", 503, b"upstream connect error\n", ("upstream connect error", None, None)),
    ("empty", 504, b"", ("upstream error 504", None, None)),
    ("json not an object", 500, b'["x"]', ('["x"]', None, None)),
    ("invalid utf-8", 500, b"\xff\xfeoops", ("\ufffd\ufffdoops", None, None)),
]


@pytest.mark.parametrize(
    ("body", "status", "raw", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_parse_upstream_error(
    body: str, status: int, raw: bytes, expected: tuple[str, str | None, str | None]
) -> None:
    assert parse_upstream_error(status, raw) == expected


def test_parse_upstream_error_cuts_long_text() -> None:
    message, _, _ = parse_upstream_error(500, b"x" * 5000)
    assert len(message) == wire.MAX_ERROR_TEXT + 1
    assert message.endswith("…")


def test_error_payload_is_the_openai_shape() -> None:
    assert wire.error_payload("m", "t", "c", "p") == {
        "error": {"message": "m", "type": "t", "param": "p", "code": "c"}
    }


def test_loads_keeps_integers_past_64_bits_exact() -> None:
    """An integer past 64 bits (orjson would make it a float) passes through exactly."""
    assert wire.loads(b'{"seed": 123456789012345678901234567890}') == {
        "seed": 123456789012345678901234567890
    }
    assert wire.dumps({"seed": 123456789012345678901234567890}) == (
        b'{"seed":123456789012345678901234567890}'
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"seed": 18446744073709551616}',
        b'{"seed": -9223372036854775809}',
        b'{"seed": 18446744073709551615, "x": [1.5, "12345678901234567890"]}',
        '{"seed": 123456789012345678901234567890, "t": "h\u00e9"}'.encode(),
    ],
)
def test_loads_round_trips_big_integers(raw: bytes) -> None:
    assert wire.loads(raw) == json.loads(raw)
    assert wire.loads(wire.dumps(wire.loads(raw))) == json.loads(raw)


@pytest.mark.parametrize("raw", [b"{", b"\xff", b"", b"[1,]"])
def test_loads_rejects_what_is_not_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        wire.loads(raw)


# -- the SSE parser's cap and its linear cost ------------------------------------------------

CAP_CASES = [
    # (pieces, cap, events before the cap, whether the cap is passed)
    ([b"data: " + b"x" * 94 + b"\n\n"], 100, [b"x" * 94], False),  # 102 bytes, whole events
    ([b"data: " + b"x" * 95], 100, [], True),  # 101 bytes still open
    ([b"data: " + b"x" * 50, b"y" * 45], 100, [], True),  # open across two reads
    ([b"data: a\n\n" * 50], 100, [b"a"] * 50, False),  # many small events, none over
    ([b": keep-alive\n" * 10], 100, [], True),  # comment lines with no blank line grow too
]


@pytest.mark.parametrize(("pieces", "cap", "events", "passed"), CAP_CASES)
def test_sse_event_cap(pieces: list[bytes], cap: int, events: list[bytes], passed: bool) -> None:
    """One event (complete or still open) may hold ``max_event`` bytes; past that the parser
    raises SSEEventTooLarge instead of buffering on."""
    parser = wire.SSEParser(max_event=cap)
    got: list[bytes] = []
    try:
        for piece in pieces:
            got += parser.feed(piece)
    except wire.SSEEventTooLarge as exc:
        assert passed, "raised under the cap"
        assert exc.limit == cap
    else:
        assert not passed, "the cap was not enforced"
    assert got == events


SPLIT_CASES = [
    # (pieces, events): line ends split across reads in every way
    ([b"data: a\r", b"\n\r\n"], [b"a"]),  # CRLF CRLF, cut inside the first
    ([b"data: a\r\n\r", b"\n"], [b"a"]),  # cut inside the second
    ([b"data: a\r", b"\r"], []),  # CR CR: the last CR may be half a CRLF, close() tells
    ([b"data: a\r", b"\r", b"\n"], [b"a"]),  # ... and it was
    ([b"data: a\r", b"\r", b"data: b\r\r"], [b"a"]),  # the trailing CR waits for close()
    ([b"data: a\n", b"\ndata: b\n", b"\n"], [b"a", b"b"]),  # LF LF split, twice
    ([b"data: a\r\n", b"\r\n", b"data: b\r\n\r\n"], [b"a", b"b"]),
    ([b"data: a\r", b"\n", b"\r", b"\n"], [b"a"]),  # one byte per read
]


@pytest.mark.parametrize(("pieces", "events"), SPLIT_CASES)
def test_sse_line_ends_split_across_reads(pieces: list[bytes], events: list[bytes]) -> None:
    """A CR, LF or CRLF cut between two reads is one line end: no event lost or doubled."""
    parser = SSEParser()
    got: list[bytes] = []
    for piece in pieces:
        got += parser.feed(piece)
    assert got == events


def test_sse_one_huge_event_costs_linear_time() -> None:
    """A 16 MiB event fed 1 KiB at a time is parsed in well under a second's work: each feed
    scans only the new bytes (rescanning the buffer each time would take hours)."""
    import time

    parser = SSEParser()
    piece = b"x" * 1024
    started = time.process_time()
    assert parser.feed(b"data: ") == []
    for _ in range(16 * 1024):
        parser.feed(piece)
    [event] = parser.feed(b"\n\n")
    assert len(event) == 16 * 1024 * 1024
    assert time.process_time() - started < 5.0


def test_sse_many_tiny_events_in_one_read() -> None:
    """10,000 events in one read come out whole and in order."""
    body = b"".join(b'data: {"i":%d}\n\n' % i for i in range(10_000))
    events = SSEParser().feed(body)
    assert events == [b'{"i":%d}' % i for i in range(10_000)]
