"""Hostile input: whatever body and headers a client sends, the gateway answers honestly.

A hypothesis property drives the real gateway (on a loop in a background thread, against the
fake router) with random JSON, wrong types, huge strings, deep nesting, invalid UTF-8, duplicate
keys, NaN literals, random Content-Types and odd Authorization values. Every answer is either a
normal completion or an OpenAI-shaped error with a 4xx status (a 5xx only for what the upstream
did); never a 500, never a stack trace, and the gateway still answers afterwards.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.threaded_gateway import ThreadedGateway, gateway_in_thread

GW_TOKEN = "gw-hostile-Qm3Vx8Lp2Rt6Zy"
MAX_BODY = 64 * 1024
CHAT = "/v1/chat/completions"
FAST = {"connectSeconds": 1, "firstTokenSeconds": 2, "idleSeconds": 2, "totalSeconds": 10}
# Statuses the gateway may answer with on its own (the fake router never fails here, but a
# random model name can be one the router does not serve: 400 passed through, or 404).
OWN_STATUSES = {200, 400, 401, 404, 405, 408, 413}


@pytest.fixture
def gw(isolated_home: Path) -> Iterator[ThreadedGateway]:
    with gateway_in_thread(
        isolated_home,
        env={"CODERCLAW_GATEWAY_TOKEN": GW_TOKEN},
        timeouts=FAST,
        limits={"maxBodyBytes": MAX_BODY},
        retries=0,
    ) as running:
        yield running


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def send(
    gw: ThreadedGateway, body: bytes | None, headers: dict[str, str], path: str = CHAT
) -> Answer:
    conn = gw.connection()
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def check_answer(answer: Answer) -> None:
    """A completion (JSON or a finished SSE stream) or an OpenAI-shaped error, never a 500."""
    assert answer.status in OWN_STATUSES, (answer.status, answer.body[:500])
    content_type = answer.headers.get("Content-Type", "")
    if answer.status == 200 and content_type.startswith("text/event-stream"):
        assert answer.body.endswith(b"data: [DONE]\n\n"), answer.body[-300:]
        return
    assert content_type.startswith("application/json"), content_type
    data = json.loads(answer.body)
    if answer.status == 200:
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["content"]
        return
    assert set(data) == {"error"}, data
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert "Traceback" not in error["message"]
    assert answer.headers.get("x-request-id")


# -- strategies --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
good_messages = st.just([{"role": "user", "content": "hi"}])
model_names = st.sampled_from(
    ["coderclaw", "huggingface/org/model-a", "huggingface/org/model-b:groq", "org/model-a"]
) | st.text(max_size=60)


@st.composite
def chat_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Request objects with extra fields whose known fields are mostly right, sometimes
    missing or of the wrong type."""
    body: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3))
    for key, good in (
        ("messages", good_messages),
        ("model", model_names),
        ("stream", st.booleans()),
    ):
        choice = draw(st.integers(0, 9))
        if choice < 6:
            body[key] = draw(good)
        elif choice < 9:
            body[key] = draw(json_values)
    return body


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


raw_bodies = st.one_of(
    chat_objects().map(_dumps),
    chat_objects().map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=200),
    st.just(b""),
    # Deep nesting, as a whole body and inside a field.
    st.integers(1, 30_000).map(_nested),
    st.integers(1, 10_000).map(lambda n: b'{"messages": ' + _nested(n) + b"}"),
    st.integers(1, 10_000).map(lambda n: _nested(n, b'{"a":', b"}").replace(b":}", b":1}")),
    # Invalid UTF-8 inside an otherwise good request.
    st.binary(min_size=1, max_size=8).map(
        lambda junk: b'{"messages": [{"role": "user", "content": "' + junk + b'\xff"}]}'
    ),
    # Duplicate keys: the last one wins, as in every JSON parser the clients use.
    st.sampled_from(
        [
            b'{"messages": [{"role": "user", "content": "hi"}], "messages": 5}',
            b'{"messages": 5, "messages": [{"role": "user", "content": "hi"}]}',
            b'{"stream": true, "messages": [{"role":"user","content":"hi"}], "stream": "yes"}',
            b'{"model": "nope/x", "model": "coderclaw", "messages": [{"role":"user"}]}',
        ]
    ),
    # NaN and Infinity are not JSON.
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b'{"messages": [], "temperature": NaN}']),
    st.just(b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}'),
    # Huge strings: near and past gateway.limits.maxBodyBytes.
    st.integers(MAX_BODY - 200, MAX_BODY + 200).map(
        lambda n: _dumps({"messages": [{"role": "user", "content": "x" * n}]})
    ),
)
# Header values as an HTTP client can send them: visible ASCII, spaces, tabs and obs-text.
field_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
).map(str.strip)
good_authorizations = st.sampled_from([f"Bearer {GW_TOKEN}", f"bearer   {GW_TOKEN}  "])
bad_authorizations = st.one_of(
    st.none(),
    field_values,
    field_values.map(lambda v: f"Bearer {v}"),
    st.just(f"Bearer {GW_TOKEN}\xe9"),
    st.just(f"Basic {GW_TOKEN}"),
)
# Mostly the right token, so that most bodies get past the authentication.
authorizations = st.integers(0, 9).flatmap(
    lambda n: good_authorizations if n < 8 else bad_authorizations
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    field_values,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=raw_bodies, authorization=authorizations, content_type=content_types)
def test_any_body_and_headers_get_a_completion_or_an_openai_error_never_a_500(
    gw: ThreadedGateway, body: bytes, authorization: str | None, content_type: str | None
) -> None:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = send(gw, body, headers)
    event(f"status {answer.status}")  # the mix shows with --hypothesis-show-statistics
    check_answer(answer)


# -- cases the property found or must never miss -----------------------------------------------


def authed(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {GW_TOKEN}", "Content-Type": "application/json", **extra}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_nested(10_000), "not valid JSON"),
        (b'{"messages": ' + _nested(10_000) + b"}", "not valid JSON"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "not valid"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": -Infinity}', "not valid"),
        (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"messages": []}', "'messages' must be a non-empty array"),
        (b'{"messages": [{}], "model": 7}', "'model' must be a string"),
        (b'{"messages": [{}], "stream": "yes"}', "'stream' must be a boolean"),
    ],
    ids=[
        "10k-nested-arrays",
        "10k-nested-in-messages",
        "NaN",
        "-Infinity",
        "invalid-utf8",
        "empty",
        "array",
        "no-messages",
        "model-int",
        "stream-string",
    ],
)
def test_bad_bodies_get_a_400_invalid_request_error_that_says_what_is_wrong(
    gw: ThreadedGateway, body: bytes, message: str
) -> None:
    answer = send(gw, body, authed())
    check_answer(answer)
    assert answer.status == 400
    error = json.loads(answer.body)["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_body_past_max_body_bytes_is_a_413_in_the_openai_shape(gw: ThreadedGateway) -> None:
    answer = send(gw, b'{"messages": "' + b"x" * MAX_BODY + b'"}', authed())
    check_answer(answer)
    assert answer.status == 413
    assert "gateway.limits.maxBodyBytes" in json.loads(answer.body)["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {GW_TOKEN}\xe9", "Bearer \xff\xfe", f"Bearer {GW_TOKEN[:-1]}", "Bearer", ""],
)
def test_odd_authorization_values_are_a_401_not_a_crash(
    gw: ThreadedGateway, authorization: str
) -> None:
    answer = send(
        gw,
        b'{"messages": [{"role": "user", "content": "hi"}]}',
        authed(Authorization=authorization),
    )
    check_answer(answer)
    assert answer.status == 401
    assert json.loads(answer.body)["error"]["code"] == "invalid_api_key"


def test_duplicate_keys_take_the_last_value_like_the_clients_parsers(gw: ThreadedGateway) -> None:
    answer = send(gw, b'{"messages": 5, "messages": [{"role": "user", "content": "hi"}]}', authed())
    assert answer.status == 200
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "Hello from org/model-a"


def test_a_malformed_request_line_or_header_is_refused_and_the_gateway_keeps_serving(
    gw: ThreadedGateway,
) -> None:
    """Framing errors are answered by aiohttp's HTTP parser (a text 400 before any handler or
    middleware runs: there is no request to answer in the OpenAI shape)."""
    for raw in (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad\x00Header: 1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS hello
        b"GARBAGE\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(raw)
            reply = sock.recv(4096)
        assert reply.split(b" ", 2)[1] == b"400", reply[:200]
    answer = send(gw, b'{"messages": [{"role": "user", "content": "hi"}]}', authed())
    assert answer.status == 200


def test_after_the_onslaught_the_gateway_is_healthy_and_still_serves(gw: ThreadedGateway) -> None:
    for body in (_nested(30_000), b"\xff" * 100, b"NaN", b'{"messages": [{}]}' * 1000):
        check_answer(send(gw, body, authed()))
    conn = gw.connection()
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    answer = send(
        gw, b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}', authed()
    )
    check_answer(answer)
    assert answer.status == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (gzip.compress(b'{"messages": [{"role": "user", "content": "hi"}]}'), 200),
        (b"this is not gzip data", 400),
        # A gzip bomb: 50 MB of spaces in 50 KB; the limit counts the decompressed bytes.
        (gzip.compress(b"[" + b" " * 50_000_000 + b"]"), 413),
    ],
    ids=["gzip", "not-gzip", "gzip-bomb"],
)
def test_a_gzip_body_is_decoded_within_max_body_bytes_and_bad_gzip_is_a_400(
    gw: ThreadedGateway, body: bytes, status: int
) -> None:
    answer = send(gw, body, authed(**{"Content-Encoding": "gzip"}))
    check_answer(answer)
    assert answer.status == status


def test_a_lone_surrogate_escape_is_passed_on_as_the_same_escape(gw: ThreadedGateway) -> None:
    """JSON allows ``"\\ud800"``; it cannot be UTF-8, so it goes upstream as the escape it was."""
    answer = send(gw, b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', authed())
    assert answer.status == 200, answer.body
    sent = gw.router.chat_requests()[-1].body
    assert b'"a\\ud800b"' in sent
