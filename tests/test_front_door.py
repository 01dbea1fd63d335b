"""Browser attacks and bypass attempts, as raw HTTP against a running gateway.

A web page the user visits can send "simple" requests to 127.0.0.1 without asking first (a
``text/plain`` or form POST), and a DNS-rebinding page sends them under its own ``Host``.
Every such request must be refused before it reaches a model; the gateway's own origin,
an origin the config allows, and clients without ``Origin`` (curl, SDKs) are served.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.threaded_gateway import ThreadedGateway, gateway_in_thread

GW_TOKEN = "gw-frontdoor-Hx7Qp2Vm9Lk4"
CHAT = "/v1/chat/completions"
BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'
EVIL = "https://evil.example"
ALLOWED = "http://localhost:5173"
REBINDING_HOSTS = [
    "evil.example:{port}", "attacker.tld", "127.0.0.1.nip.io", "localhost.evil.example"
]


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def allow_headers(self) -> list[str]:
        return [k for k in self.headers if k.lower().startswith("access-control-allow")]


def raw(gw: ThreadedGateway, request: bytes) -> Answer:
    """Send ``request`` as written on a new connection; the gateway's answer."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = Message()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        length = int(headers.get("Content-Length", "0") or 0)
        chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        while (len(body) < length) or (chunked and not body.endswith(b"0\r\n\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Answer(int(lines[0].split(" ")[1]), headers, body)


def request(
    gw: ThreadedGateway,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    *,
    host: str | None = "127.0.0.1:{port}",
    version: str = "1.1",
) -> Answer:
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host.format(port=gw.port)}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return raw(gw, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))


def assert_refused(answer: Answer, code: str) -> None:
    assert answer.status == 403, answer.body[:300]
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == "permission_error"
    assert answer.allow_headers() == []
    assert answer.headers["x-request-id"]


@pytest.fixture
def gw(isolated_home: Path) -> Iterator[ThreadedGateway]:
    """A gateway without a gateway token (the default on loopback), one origin allowed."""
    with gateway_in_thread(isolated_home, allowedOrigins=[ALLOWED], retries=0) as running:
        yield running


@pytest.fixture
def gw_token(isolated_home: Path) -> Iterator[ThreadedGateway]:
    with gateway_in_thread(
        isolated_home, env={"CODERCLAW_GATEWAY_TOKEN": GW_TOKEN}, retries=0
    ) as running:
        yield running


# -- foreign origins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x"],
)
@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:3000"])
def test_a_simple_post_from_a_foreign_origin_is_403_and_reaches_no_model(
    gw: ThreadedGateway, content_type: str, origin: str
) -> None:
    """What a page can send without a preflight (fetch no-cors, a form) never gets through,
    whatever the content type; the 403 says which setting would allow the origin."""
    answer = request(gw, "POST", CHAT, {"Origin": origin, "Content-Type": content_type}, BODY)
    assert_refused(answer, "origin_not_allowed")
    assert "gateway.allowedOrigins" in answer.json()["error"]["message"]
    assert gw.router.chat_requests() == []


@pytest.mark.parametrize("path", ["/v1/models", "/readyz", "/metrics", "/openapi.json"])
def test_reads_from_a_foreign_origin_are_refused_too(gw: ThreadedGateway, path: str) -> None:
    assert_refused(request(gw, "GET", path, {"Origin": EVIL}), "origin_not_allowed")


def test_healthz_answers_a_foreign_origin_but_without_any_cors_header(gw: ThreadedGateway) -> None:
    answer = request(gw, "GET", "/healthz", {"Origin": EVIL})
    assert answer.status == 200
    assert answer.allow_headers() == []


def test_a_preflight_from_a_foreign_origin_gets_no_allow_headers(gw: ThreadedGateway) -> None:
    answer = request(
        gw,
        "OPTIONS",
        CHAT,
        {
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert_refused(answer, "origin_not_allowed")


# -- DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", REBINDING_HOSTS)
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", CHAT)])
def test_a_rebinding_host_is_403_on_the_api_and_reaches_no_model(
    gw: ThreadedGateway, host: str, method: str, path: str
) -> None:
    """A page whose name was pointed at 127.0.0.1 reads answers as same-origin; its Host
    gives it away (with no Origin, and with its own as Origin)."""
    body = BODY if method == "POST" else None
    for headers in ({}, {"Origin": "http://" + host.format(port=gw.port)}):
        answer = request(gw, method, path, {"Content-Type": "application/json", **headers},
                         body, host=host)
        assert_refused(answer, "host_not_allowed")
        assert "gateway.allowedHosts" in answer.json()["error"]["message"]
    assert gw.router.chat_requests() == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "localhost", "app.localhost:{port}",
             "[::1]:{port}", "10.0.0.1:{port}"]
)
def test_localhost_names_and_ip_literals_are_answered(gw: ThreadedGateway, host: str) -> None:
    assert request(gw, "GET", "/v1/models", host=host).status == 200


def test_an_http_1_0_request_without_host_is_answered_it_is_not_a_browsers(
    gw: ThreadedGateway,
) -> None:
    """Browsers always send Host; HTTP/1.1 requires it (aiohttp answers 400 without it)."""
    assert request(gw, "GET", "/v1/models", host=None, version="1.0").status == 200
    assert request(gw, "GET", "/v1/models", host=None).status == 400


def test_a_name_in_allowed_hosts_is_answered(isolated_home: Path) -> None:
    with gateway_in_thread(isolated_home, allowedHosts=["host.docker.internal"]) as gw:
        answer = request(gw, "GET", "/v1/models", host="host.docker.internal:{port}")
        assert answer.status == 200
        assert request(gw, "GET", "/v1/models", host="docker.internal").status == 403


# -- what is served ----------------------------------------------------------------------------


def test_without_origin_a_curl_form_post_is_served(gw: ThreadedGateway) -> None:
    """``curl -d '{…}'`` sends a form content type and no Origin: unaffected."""
    answer = request(gw, "POST", CHAT, {"Content-Type": "application/x-www-form-urlencoded",
                                        "User-Agent": "curl/8.5.0", "Accept": "*/*"}, BODY)
    assert answer.status == 200
    assert answer.json()["object"] == "chat.completion"
    assert answer.allow_headers() == []
    assert len(gw.router.chat_requests()) == 1


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}"])
def test_the_gateways_own_origin_is_served_with_its_cors_origin(
    gw: ThreadedGateway, origin: str
) -> None:
    own = origin.format(port=gw.port)
    answer = request(gw, "POST", CHAT, {"Origin": own, "Content-Type": "text/plain"}, BODY)
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == own
    assert len(gw.router.chat_requests()) == 1


def test_an_allowed_origin_gets_a_preflight_answer_and_cors_on_json_and_streams(
    gw: ThreadedGateway,
) -> None:
    """gateway.allowedOrigins: the preflight is 204 with the methods and the SDKs' headers,
    and the answers (a stream too, whose headers are sent by the handler) carry the origin."""
    preflight = request(
        gw,
        "OPTIONS",
        CHAT,
        {
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-stainless-os"
    )
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert gw.router.chat_requests() == []

    plain = request(gw, "POST", CHAT, {"Origin": ALLOWED, "Content-Type": "application/json"},
                    BODY)
    stream = request(
        gw, "POST", CHAT, {"Origin": ALLOWED, "Content-Type": "application/json"},
        b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}',
    )
    for answer in (plain, stream):
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "x-request-id" in answer.headers["Access-Control-Expose-Headers"]
        assert "Origin" in answer.headers["Vary"]
    assert b"data: [DONE]" in stream.body


# -- /metrics ----------------------------------------------------------------------------------


def test_metrics_need_the_gateway_token_when_one_is_set(gw_token: ThreadedGateway) -> None:
    refused = request(gw_token, "GET", "/metrics")
    assert refused.status == 401
    assert "gateway.metrics.public" in refused.json()["error"]["message"]
    assert GW_TOKEN.encode() not in refused.body
    served = request(gw_token, "GET", "/metrics", {"Authorization": f"Bearer {GW_TOKEN}"})
    assert served.status == 200
    assert b"coderclaw_" in served.body
    for probe in ("/healthz", "/readyz"):
        assert request(gw_token, "GET", probe).status in (200, 503), probe
        assert request(gw_token, "GET", probe).status != 401


def test_metrics_public_opens_metrics_and_nothing_else(isolated_home: Path) -> None:
    with gateway_in_thread(
        isolated_home, env={"CODERCLAW_GATEWAY_TOKEN": GW_TOKEN}, metrics={"public": True}
    ) as gw:
        assert request(gw, "GET", "/metrics").status == 200
        assert request(gw, "GET", "/v1/models").status == 401


# -- what held up: bypasses, huge headers, smuggling ------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/models"),
        ("GET", "//v1/models"),
        ("GET", "/v1//models"),
        ("GET", "/v1/../v1/models"),
        ("GET", "/./v1/models"),
        ("GET", "/x/../v1/models"),
        ("GET", "/V1/models"),
        ("GET", "/v1/Models"),
        ("GET", "/%2Fv1/models"),
        ("GET", "/%2fv1%2fmodels"),
        ("GET", "/%76%31/models"),
        ("GET", "/v1%2Fmodels"),
        ("GET", "/v1/models/"),
        ("GET", "/v1/models?x=/healthz"),
        ("GET", "/v1/models#/healthz"),
        ("GET", "/v1/models%00"),
        ("GET", "/healthz/../v1/models"),
        ("GET", "http://127.0.0.1/v1/models"),
        ("GET", "HTTP://127.0.0.1:1/v1/models"),
        ("HEAD", "/v1/models"),
        ("OPTIONS", "/v1/models"),
        ("OPTIONS", CHAT),
        ("POST", CHAT),
        ("POST", "//v1/chat/completions"),
        ("POST", "/v1/chat/completions/"),
        ("POST", "/v1/chat/completions;x"),
        ("PUT", CHAT),
    ],
)
def test_no_path_or_method_variant_gets_past_the_gateway_token(
    gw_token: ThreadedGateway, method: str, target: str
) -> None:
    """Each variant is refused (401) or matches no route (404/405/400): never the model list,
    never a request upstream."""
    answer = request(gw_token, method, target, {"Content-Type": "application/json"},
                     BODY if method in ("POST", "PUT") else None)
    assert answer.status in (400, 401, 404, 405), (answer.status, answer.body[:200])
    assert b"huggingface/" not in answer.body
    assert gw_token.router.chat_requests() == []


@pytest.mark.parametrize(
    "hosts",
    [
        ["127.0.0.1:{port}", "evil.example"],
        ["evil.example", "127.0.0.1:{port}"],
        ["127.0.0.1:{port}, evil.example"],
    ],
)
def test_two_host_values_are_refused(gw: ThreadedGateway, hosts: list[str]) -> None:
    lines = "".join(f"Host: {h.format(port=gw.port)}\r\n" for h in hosts)
    answer = raw(gw, f"GET /v1/models HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode())
    assert answer.status in (400, 403), answer.status


def test_huge_or_too_many_headers_are_refused_and_the_gateway_keeps_serving(
    gw: ThreadedGateway,
) -> None:
    for headers in (
        {"X-Big": "a" * 70_000},
        {"Cookie": "a" * 9000},
        {f"X-H{i}": "v" for i in range(200)},
    ):
        answer = request(gw, "POST", CHAT, {"Content-Type": "application/json", **headers}, BODY)
        assert answer.status in (400, 431), answer.status
    assert gw.router.chat_requests() == []
    assert request(gw, "GET", "/healthz").status == 200


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        "Content-Length: 4\r\nContent-Length: 60",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding : chunked",
    ],
)
def test_request_smuggling_framings_are_refused_and_the_hidden_request_never_runs(
    gw: ThreadedGateway, framing: str
) -> None:
    """A body whose length two headers disagree on hides a second request after it; the
    gateway refuses the first and never runs the second."""
    hidden = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        b"application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )
    chunked = b"0\r\n\r\n"
    head = (
        f"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n{framing}\r\n\r\n"
    ).encode()
    answer = raw(gw, head + chunked + hidden)
    assert answer.status == 400, (answer.status, answer.body[:200])
    assert gw.router.chat_requests() == []
    assert request(gw, "GET", "/healthz").status == 200
