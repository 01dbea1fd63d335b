"""The gateway's HTTP surface, raw (aiohttp): auth, bad input, routes, probes, metrics, secrets."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.observe import setup_logging
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import TOKEN, GatewayView, run_gateway

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = f"huggingface/{A}", f"huggingface/{B}"
GATEWAY_TOKEN = "gw-0123456789abcdefSECRET"
MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "coderclaw", "messages": MESSAGES}
FAST = {"connectSeconds": 1, "firstTokenSeconds": 0.5, "idleSeconds": 0.5, "totalSeconds": 10}


@asynccontextmanager
async def serve(
    home: Path, router: FakeRouter, **config: Any
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, GatewayView]]:
    """The gateway and a session; ``base`` is the origin (no /v1)."""
    config.setdefault("timeouts", FAST)
    async with (
        run_gateway(home, router, **config) as (base_v1, state),
        aiohttp.ClientSession() as session,
    ):
        yield session, base_v1.removesuffix("/v1"), state


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The OpenAI error object of a JSON error response (asserting its shape)."""
    assert resp.content_type == "application/json"
    assert resp.headers["x-request-id"]
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# -- gateway auth ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["config", "env"])
async def test_gateway_token_guards_v1(
    isolated_home: Path, router: FakeRouter, source: str
) -> None:
    config: dict[str, Any] = (
        {"auth": {"token": GATEWAY_TOKEN}}
        if source == "config"
        else {"env": {"CODERCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN}}
    )
    async with serve(isolated_home, router, **config) as (session, base, _):
        for headers in ({}, bearer("wrong"), bearer(GATEWAY_TOKEN + "x"), {"Authorization": ""}):
            async with session.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers) as r:
                assert r.status == 401
                error = await error_of(r)
                assert error["code"] == "invalid_api_key"
                assert "CODERCLAW_GATEWAY_TOKEN" in error["message"]
                assert GATEWAY_TOKEN not in error["message"]
            async with session.get(f"{base}/v1/models", headers=headers) as r:
                assert r.status == 401
        basic = {"Authorization": f"Basic {GATEWAY_TOKEN}"}
        async with session.get(f"{base}/v1/models", headers=basic) as r:
            assert r.status == 401
        async with session.post(
            f"{base}/v1/chat/completions", json=CHAT, headers=bearer(GATEWAY_TOKEN)
        ) as r:
            assert r.status == 200
            assert (await r.json())["model"] == REF_A
        lower = {"Authorization": f"bearer {GATEWAY_TOKEN}"}
        async with session.get(f"{base}/v1/models", headers=lower) as r:
            assert r.status == 200
        for probe in ("/healthz", "/readyz"):
            async with session.get(f"{base}{probe}") as r:
                assert r.status == 200, probe
        async with session.get(f"{base}/metrics") as r:
            assert r.status == 401  # the counters name models and clients: token only
    assert len(router.chat_requests()) == 1  # refused requests never reach the router


async def test_without_a_gateway_token_v1_is_open(isolated_home: Path, router: FakeRouter) -> None:
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.get(f"{base}/v1/models") as r,
    ):
        assert r.status == 200


# -- probes and metrics ----------------------------------------------------------------------


async def test_healthz_and_readyz(isolated_home: Path, router: FakeRouter) -> None:
    async with serve(isolated_home, router) as (session, base, _):
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        async with session.get(f"{base}/readyz") as r:
            assert r.status == 200
            body = await r.json()
    assert body["status"] == "ready"
    assert body["catalog"]["models"] >= 10


async def test_readyz_without_an_hf_token_is_503_with_the_reason(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router, token=None) as (session, base, _):
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with session.get(f"{base}/readyz") as r:
            assert r.status == 503
            body = await r.json()
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 503
            error = await error_of(r)
    assert body["status"] == "not ready"
    assert any(
        "Hugging Face token" in reason and "coderclaw onboard" in reason
        for reason in body["reasons"]
    )
    assert "coderclaw onboard" in error["message"]
    assert router.chat_requests() == []


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text``."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {key} in the metrics")


async def test_metrics_count_requests_attempts_fallbacks_and_cooling(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=503, retry_after="0", repeat=True))
    async with serve(isolated_home, router) as (session, base, _):
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        async with session.post(f"{base}/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            assert r.status == 200
            await r.read()
        async with session.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            text = await r.text()
    assert _metric(text, "coderclaw_requests_total", model=REF_B, outcome="ok") == 2
    assert _metric(text, "coderclaw_upstream_attempts_total", model=REF_A, status="503") == 2
    assert _metric(text, "coderclaw_upstream_attempts_total", model=REF_B, status="200") == 2
    assert _metric(text, "coderclaw_fallbacks_total") == 2
    assert _metric(text, "coderclaw_cooling_models") == 1
    assert _metric(text, "coderclaw_active_streams") == 0
    assert _metric(text, "coderclaw_catalog_models") >= 10
    assert _metric(text, "coderclaw_time_to_first_byte_seconds_count") == 2
    assert _metric(text, "coderclaw_upstream_latency_seconds_count") == 4


# -- bad input -------------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"{not json", None, id="malformed-json"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(b'["messages"]', None, id="array-body"),
    pytest.param(b'"hello"', None, id="string-body"),
    pytest.param(b'{"model": "coderclaw"}', "messages", id="missing-messages"),
    pytest.param(b'{"messages": []}', "messages", id="empty-messages"),
    pytest.param(b'{"messages": "hi"}', "messages", id="messages-not-a-list"),
    pytest.param(
        b'{"messages": [{"role":"user","content":"x"}], "model": 7}', "model", id="model-int"
    ),
    pytest.param(
        b'{"messages": [{"role":"user","content":"x"}], "model": ["a"]}', "model", id="model-list"
    ),
    pytest.param(
        b'{"messages": [{"role":"user","content":"x"}], "stream": "yes"}', "stream", id="stream-str"
    ),
    pytest.param(
        b'{"messages": [{"role":"user","content":"x"}], "stream": 1}', "stream", id="stream-int"
    ),
    pytest.param(b"\xff\xfe{}", None, id="not-utf8"),
]


@pytest.mark.parametrize(("raw", "param"), BAD_BODIES)
async def test_bad_bodies_are_400_in_the_openai_shape(
    isolated_home: Path, router: FakeRouter, raw: bytes, param: str | None
) -> None:
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.post(
            f"{base}/v1/chat/completions",
            data=raw,
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 400
        error = await error_of(r)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert router.chat_requests() == []


async def test_an_absent_model_or_null_stream_means_the_chain(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.post(
            f"{base}/v1/chat/completions", json={"messages": MESSAGES, "stream": None}
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["model"] == REF_A


async def test_a_body_over_the_limit_is_413_json(isolated_home: Path, router: FakeRouter) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    async with serve(isolated_home, router, limits={"maxBodyBytes": 4096}) as (session, base, _):
        async with session.post(f"{base}/v1/chat/completions", json=big) as r:
            assert r.status == 413
            error = await error_of(r)
        small = {"messages": [{"role": "user", "content": "x" * 3000}]}
        async with session.post(f"{base}/v1/chat/completions", json=small) as r:
            assert r.status == 200
    assert "maxBodyBytes" in error["message"]
    assert len(router.chat_requests()) == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing-here", 404),
        ("GET", "/v1", 404),
        ("POST", "/v1/completions", 404),
        ("GET", "/v1/embeddings", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/models", 405),
        ("POST", "/healthz", 405),
    ],
)
async def test_unknown_routes_and_methods_are_json(
    isolated_home: Path, router: FakeRouter, method: str, path: str, status: int
) -> None:
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.request(method, f"{base}{path}") as r,
    ):
        assert r.status == status
        error = await error_of(r)
        if status == 405:
            assert r.headers["Allow"]
    assert method in error["message"] and path in error["message"]


async def test_model_not_found_and_upstream_errors_carry_a_request_id(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=400, error_code=""))
    async with serve(isolated_home, router) as (session, base, _):
        async with session.post(
            f"{base}/v1/chat/completions", json={**CHAT, "model": "no such model"}
        ) as r:
            assert r.status == 404
            assert (await error_of(r))["code"] == "model_not_found"
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 400
            ids = {r.headers["x-request-id"]}
            await error_of(r)
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as r:
            ids.add(r.headers["x-request-id"])
    assert len(ids) == 2  # a new id per request


@pytest.mark.parametrize(
    ("shape", "status", "words"),
    [
        ("html", 502, "502 Bad Gateway"),
        ("text", 400, "Your request was rejected"),
        ("string", 400, "Your request was rejected"),
        ("object", 422, "Unprocessable"),
    ],
)
async def test_router_error_bodies_are_wrapped_in_the_openai_shape(
    isolated_home: Path, router: FakeRouter, shape: Any, status: int, words: str
) -> None:
    code = "content_policy_violation" if status == 400 else ""
    router.set_default(Reply(status=status, error_shape=shape, error_code=code, repeat=True))
    async with (
        serve(isolated_home, router, retries=0) as (session, base, _),
        session.post(f"{base}/v1/chat/completions", json=CHAT) as r,
    ):
        error = await error_of(r)
        assert r.status == status
    assert words in error["message"]
    assert "<" not in error["message"]


# -- /v1/models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("huggingface/Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("huggingface%2FQwen%2FQwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("Qwen%2FQwen3-8B", "huggingface/Qwen/Qwen3-8B"),
        ("huggingface/Qwen/Qwen3-8B:cheapest", "huggingface/Qwen/Qwen3-8B:cheapest"),
        ("cheap%20QWEN", "cheap qwen"),
        ("coderclaw", "coderclaw"),
        (REF_A, REF_A),
    ],
)
async def test_get_one_model(
    isolated_home: Path, router: FakeRouter, path: str, wanted: str
) -> None:
    aliases = {"Cheap Qwen": "huggingface/Qwen/Qwen3-8B:cheapest"}
    async with (
        serve(isolated_home, router, aliases=aliases) as (session, base, _),
        session.get(f"{base}/v1/models/{path}") as r,
    ):
        assert r.status == 200
        body = await r.json()
    assert body["id"].lower() == wanted.lower()
    assert body["object"] == "model"


@pytest.mark.parametrize("path", ["huggingface/nobody/nothing", "gpt-4o", "a%2Fb%2Fc%2Fd"])
async def test_get_an_unknown_model_is_404_json(
    isolated_home: Path, router: FakeRouter, path: str
) -> None:
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.get(f"{base}/v1/models/{path}") as r,
    ):
        assert r.status == 404
        assert (await error_of(r))["code"] == "model_not_found"


async def test_models_list_shape(isolated_home: Path, router: FakeRouter) -> None:
    aliases = {"Cheap Qwen": "huggingface/Qwen/Qwen3-8B:cheapest"}
    async with (
        serve(isolated_home, router, aliases=aliases) as (session, base, _),
        session.get(f"{base}/v1/models") as r,
    ):
        body = await r.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["coderclaw"]["chain"] == [REF_A, REF_B]
    qwen = by_id["huggingface/Qwen/Qwen3-8B"]
    assert qwen["context_length"] == 40_960
    assert qwen["pricing"]["input"] > 0
    assert by_id["huggingface/Qwen/Qwen3-8B:cheapest"]["aliases"] == ["Cheap Qwen"]
    assert by_id["Cheap Qwen"]["alias_for"] == "huggingface/Qwen/Qwen3-8B:cheapest"
    assert all(m["object"] == "model" for m in body["data"])


# -- secrets ---------------------------------------------------------------------------------


@pytest.fixture
def rendered_logs() -> Iterator[io.StringIO]:
    """The gateway's real log pipeline (JSON lines, with its redactor) into a buffer."""
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


ECHO = f"invalid key {TOKEN} and {GATEWAY_TOKEN}"
LEAKY_REPLIES = [
    pytest.param([Reply(status=401)], False, id="401"),
    pytest.param([Reply(status=402)], False, id="402"),
    pytest.param([Reply(status=403)], False, id="403"),
    pytest.param([Reply(status=401, error_message=ECHO)], False, id="401-echo"),
    pytest.param([Reply(status=400, error_code="", error_message=ECHO)], False, id="400-echo"),
    pytest.param([Reply(status=503, error_message=ECHO, repeat=True)], False, id="503-echo"),
    pytest.param(
        [Reply(status=502, error_shape="text", error_message=ECHO, repeat=True)],
        False,
        id="text-echo",
    ),
    pytest.param([Reply(chunks=3, error_event_after=1, error_message=ECHO)], True, id="event-echo"),
    pytest.param(
        [Reply(error_code="", error_message=ECHO, status=422)], True, id="422-echo-stream"
    ),
]


@pytest.mark.parametrize(("replies", "stream"), LEAKY_REPLIES)
async def test_tokens_never_reach_logs_or_error_bodies(
    isolated_home: Path,
    router: FakeRouter,
    rendered_logs: io.StringIO,
    replies: list[Reply],
    stream: bool,
) -> None:
    router.script(A, *replies)
    router.script(B, *replies)
    config = {"auth": {"token": GATEWAY_TOKEN}}
    async with serve(isolated_home, router, **config) as (session, base, _):
        async with session.post(
            f"{base}/v1/chat/completions",
            json={**CHAT, "stream": stream},
            headers=bearer(GATEWAY_TOKEN),
        ) as r:
            body = await r.read()
            headers = str(dict(r.headers))
        async with session.post(
            f"{base}/v1/chat/completions", json=CHAT, headers=bearer(TOKEN)
        ) as r:
            refused = await r.read()  # a client sending the HF token as the gateway token
    logs = rendered_logs.getvalue()
    assert '"event":"chat_completion"' in logs  # the request was logged
    for secret in (TOKEN, GATEWAY_TOKEN):
        assert secret not in logs
        assert secret.encode() not in body
        assert secret.encode() not in refused
        assert secret not in headers
    if not stream:
        assert json.loads(body)["error"]["message"]


async def test_the_log_line_of_a_request(
    isolated_home: Path, router: FakeRouter, rendered_logs: io.StringIO
) -> None:
    """One structured line per request: id, requested, served, attempts (each with its own
    time), time to first byte, total time, tokens."""
    router.script(A, Reply(status=503, repeat=True))  # retried after a 0.375-0.5 s backoff
    async with (
        serve(isolated_home, router) as (session, base, _),
        session.post(f"{base}/v1/chat/completions", json={**CHAT, "stream": True}) as r,
    ):
        await r.read()
        request_id = r.headers["x-request-id"]
    lines = [json.loads(line) for line in rendered_logs.getvalue().splitlines() if line]
    [entry] = [e for e in lines if e["event"] == "chat_completion"]
    assert entry["request_id"] == request_id
    assert entry["requested"] == "coderclaw"
    assert entry["served"] == REF_B
    assert entry["outcome"] == "ok"
    assert [(a["model"], a["status"]) for a in entry["attempts"]] == [
        (REF_A, 503),
        (REF_A, 503),
        (REF_B, 200),
    ]
    assert entry["total_ms"] >= entry["ttfb_ms"] >= 375
    assert entry["attempts"][2]["ms"] < 300  # the serving attempt alone, not the whole request
    assert entry["completion_tokens"] == 3
    assert entry["prompt_tokens"] == 2


# -- an upstream that writes its answers in pieces -------------------------------------------


class PiecemealRouter:
    """A router stand-in whose error bodies arrive in several pieces (chunked), like a proxy
    that flushes as it goes; model-b answers normally. Only what the harness needs."""

    def __init__(self) -> None:
        self.url = ""
        self.base_url = ""
        self.sent: list[str] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> PiecemealRouter:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.base_url = f"{self.url}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.sent.append(body["model"])
        if body["model"] == B:
            return web.json_response(
                {
                    "object": "chat.completion",
                    "model": B,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ok"},
                        }
                    ],
                }
            )
        error = {
            "error": {
                "message": f"The requested model '{body['model']}' is not supported by any "
                "provider you have enabled.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_supported",
            }
        }
        raw = json.dumps(error).encode()
        resp = web.StreamResponse(status=400)
        resp.content_type = "application/json"
        await resp.prepare(request)
        for i in range(0, len(raw), 40):
            await resp.write(raw[i : i + 40])
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp


async def test_an_error_body_in_pieces_is_read_whole(isolated_home: Path) -> None:
    """The code of a 400 decides failover: the whole body is read, not its first piece."""
    async with (
        PiecemealRouter() as upstream,
        run_gateway(isolated_home, upstream, timeouts=FAST) as (base, _),  # type: ignore[arg-type]
        aiohttp.ClientSession() as session,
        session.post(f"{base}/chat/completions", json=CHAT) as r,
    ):
        assert r.status == 200
        assert r.headers["x-coderclaw-attempts"] == f"{REF_A}=400,{REF_B}=200"
    assert upstream.sent == [A, B]
