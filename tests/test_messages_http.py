"""The Messages API's HTTP edge (SPEC §10.2): the front door's own errors in Anthropic's shape
on the Messages routes (and OpenAI's, unchanged, elsewhere), the chain's failures by status,
the gateway token as ``x-api-key``, the probes, Anthropic's model list, the log line and
metrics of the dialect, the ``ping`` of a silent stream, and the ``modelMap`` config check.

The real gateway app on 127.0.0.1 port 0 against the fake router; clients are aiohttp and the
``anthropic`` SDK.
"""

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

from gateway.app_state import REQUEST_ID
from gateway.dialects.messages import DEFAULT_MODEL_MAP, chat_request
from gateway.dialects.messages.http import PING_SECONDS, MessagesSink
from gateway.dialects.messages.request import clamp_max_tokens
from gateway.errors import ConfigError
from gateway.observe import setup_logging
from gateway.refs import parse_ref
from gateway.settings import load_settings
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import GatewayView, run_gateway, serve_app, write_config

anthropic = pytest.importorskip("anthropic")

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = (f"huggingface/{m}" for m in (A, B))
FAST = {"connectSeconds": 1, "firstTokenSeconds": 0.5, "idleSeconds": 0.5, "totalSeconds": 10}
CLAUDE = "claude-sonnet-4-5-20250929"
BODY: dict[str, Any] = {
    "model": CLAUDE,
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "Hi"}],
}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
GW_TOKEN = "gw-messages-Vt5Kp9Qw3Lz7Rb"


@asynccontextmanager
async def serve(
    home: Path, router: FakeRouter, **config: Any
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, GatewayView]]:
    """The gateway and a session; ``root`` is the origin (no /v1)."""
    config.setdefault("timeouts", FAST)
    async with (
        run_gateway(home, router, **config) as (base_v1, state),
        aiohttp.ClientSession() as session,
    ):
        yield session, base_v1.removesuffix("/v1"), state


async def sdk_call(root: str, method: str, *args: Any, api_key: str = "x", **kwargs: Any) -> Any:
    """``client.<method>(*args, **kwargs)`` with a fresh ``anthropic`` client, closed after."""
    async with anthropic.AsyncAnthropic(base_url=root, api_key=api_key, max_retries=0) as client:
        target: Any = client
        for name in method.split("."):
            target = getattr(target, name)
        return await target(*args, **kwargs)


async def anthropic_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``error`` object of an Anthropic-shaped error body (the shape checked)."""
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


# -- the front door's errors ------------------------------------------------------------------


async def test_a_body_over_max_body_bytes_is_request_too_large_in_anthropic_shape(
    isolated_home: Path, router: FakeRouter
) -> None:
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 4096}]}
    async with serve(isolated_home, router, limits={"maxBodyBytes": 1024}) as (http, root, _):
        async with http.post(f"{root}/v1/messages", json=big) as r:
            assert r.status == 413
            error = await anthropic_error(r)
        async with http.post(f"{root}/v1/messages/count_tokens", json=big) as r:
            assert r.status == 413
            assert (await anthropic_error(r))["type"] == "request_too_large"
        with pytest.raises(anthropic.RequestTooLargeError):
            await sdk_call(root, "messages.create", **big)
    assert error["type"] == "request_too_large"
    assert "maxBodyBytes" in error["message"]
    assert router.chat_requests() == []


async def test_an_unknown_model_is_not_found_error_when_the_model_map_has_no_catch_all(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A ``claude-…`` name no glob matches is a 404 ``not_found_error`` that says how to map
    it, for messages and count_tokens alike; no router call."""
    config = {"anthropic": {"modelMap": {"claude-sonnet-*": "coderclaw"}}}
    async with serve(isolated_home, router, **config) as (http, root, _):
        wrong = {**BODY, "model": "claude-haiku-4-5"}
        async with http.post(f"{root}/v1/messages", json=wrong) as r:
            assert r.status == 404
            error = await anthropic_error(r)
        async with http.post(f"{root}/v1/messages/count_tokens", json=wrong) as r:
            assert r.status == 404
        with pytest.raises(anthropic.NotFoundError):
            await sdk_call(root, "messages.create", **wrong)
        served = await sdk_call(root, "messages.create", **BODY)  # the mapped name is served
    assert error["type"] == "not_found_error"
    assert "claude-haiku-4-5" in error["message"] and "modelMap" in error["message"]
    assert served.model == REF_A
    assert len(router.chat_requests()) == 1


async def test_an_unknown_route_under_v1_messages_is_not_found_error(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (http, root, _):
        async with http.post(f"{root}/v1/messages/batches", json=BODY) as r:
            assert r.status == 404
            assert (await anthropic_error(r))["type"] == "not_found_error"
        async with http.get(f"{root}/v1/messages") as r:
            assert r.status == 405
            assert (await anthropic_error(r))["type"] == "invalid_request_error"


async def test_a_wrong_gateway_token_is_authentication_error_and_x_api_key_is_accepted(
    isolated_home: Path, router: FakeRouter
) -> None:
    """On the Messages routes a wrong or missing token is Anthropic's 401 naming both headers;
    ``x-api-key`` or ``Authorization: Bearer`` with the token passes, on every /v1 route."""
    async with serve(isolated_home, router, auth={"token": GW_TOKEN}) as (http, root, _):
        for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
            async with http.post(f"{root}/v1/messages", json=BODY, headers=headers) as r:
                assert r.status == 401
                error = await anthropic_error(r)
                assert error["type"] == "authentication_error"
                assert "x-api-key" in error["message"]
        # either header matching is enough: a stale Bearer beside the right x-api-key passes
        both = {"x-api-key": GW_TOKEN, "Authorization": "Bearer stale"}
        async with http.post(f"{root}/v1/messages", json=BODY, headers=both) as r:
            assert r.status == 200
        chat = {"messages": [{"role": "user", "content": "Hi"}]}
        async with http.post(
            f"{root}/v1/chat/completions", json=chat, headers={"x-api-key": GW_TOKEN}
        ) as r:
            assert r.status == 200
        async with http.get(f"{root}/v1/models", headers={"x-api-key": GW_TOKEN}) as r:
            assert r.status == 200
        with pytest.raises(anthropic.AuthenticationError):
            await sdk_call(root, "models.list", api_key="wrong")


async def test_openai_routes_keep_their_openai_error_bodies(
    isolated_home: Path, router: FakeRouter
) -> None:
    """The chat path's 401 and 404 are byte for byte what they were before the Messages API."""
    async with serve(isolated_home, router, auth={"token": GW_TOKEN}) as (http, root, _):
        async with http.post(f"{root}/v1/chat/completions", json={}) as r:
            assert r.status == 401
            unauthorized = await r.read()
        async with http.get(
            f"{root}/v1/nope", headers={"Authorization": f"Bearer {GW_TOKEN}"}
        ) as r:
            assert r.status == 404
            missing = await r.read()
    assert json.loads(unauthorized) == {
        "error": {
            "message": "missing or wrong gateway token: send Authorization: Bearer <token> "
            "(gateway.auth.token or CODERCLAW_GATEWAY_TOKEN)",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert json.loads(missing) == {
        "error": {
            "message": "no route for GET /v1/nope; the API is under /v1",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


async def test_a_refused_origin_is_permission_error_on_the_messages_routes(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (http, root, _):
        headers = {"Origin": "https://evil.example"}
        async with http.post(f"{root}/v1/messages", json=BODY, headers=headers) as r:
            assert r.status == 403
            assert (await anthropic_error(r))["type"] == "permission_error"
        async with http.post(
            f"{root}/v1/chat/completions", json={"messages": []}, headers=headers
        ) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"]  # OpenAI's shape there
    assert router.chat_requests() == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**BODY, "max_tokens": 0}, "max_tokens"),
        ({**BODY, "max_tokens": None}, "max_tokens"),
        ({**BODY, "model": 7}, "model"),
        ({**BODY, "stream": "yes"}, "stream"),
        ({**BODY, "messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({**BODY, "tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ([BODY], "JSON object"),
    ],
)
async def test_wrong_types_are_invalid_request_error_naming_the_field(
    isolated_home: Path, router: FakeRouter, body: Any, param: str
) -> None:
    async with (
        serve(isolated_home, router) as (http, root, _),
        http.post(f"{root}/v1/messages", json=body) as r,
    ):
        assert r.status == 400
        error = await anthropic_error(r)
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert router.chat_requests() == []


async def test_no_hugging_face_token_is_an_api_error_that_says_to_onboard(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with (
        serve(isolated_home, router, token=None) as (http, root, _),
        http.post(f"{root}/v1/messages", json=BODY) as r,
    ):
        assert r.status == 503
        error = await anthropic_error(r)
    assert error["type"] == "api_error"
    assert "coderclaw onboard" in error["message"]


# -- the chain's failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replies", "status", "kind", "says"),
    [
        ([Reply(status=402)], 402, "billing_error", "credits exhausted"),
        ([Reply(status=403)], 403, "permission_error", "coderclaw onboard"),
        ([Reply(status=503, repeat=True)], 529, "overloaded_error", "every model is unavailable"),
        ([Reply(status=500, repeat=True)], 502, "api_error", "every model failed"),
        ([Reply(status=400, error_code="")], 400, "invalid_request_error", ""),
        ([Reply(status=422, error_code="")], 422, "invalid_request_error", ""),
    ],
)
async def test_chain_failures_are_rendered_by_status(
    isolated_home: Path,
    router: FakeRouter,
    replies: list[Reply],
    status: int,
    kind: str,
    says: str,
) -> None:
    """Account-wide refusals carry the gateway's explanation; an all-503 chain is Anthropic's
    529 ``overloaded_error``; a refused request keeps its 4xx; the attempts header stays."""
    router.script(A, *replies)
    router.script(B, *replies)
    async with (
        serve(isolated_home, router, retries=0) as (http, root, _),
        http.post(f"{root}/v1/messages", json=BODY) as r,
    ):
        assert r.status == status
        error = await anthropic_error(r)
        attempts = r.headers["x-coderclaw-attempts"]
    assert error["type"] == kind
    assert says in error["message"]
    assert attempts.startswith(f"{REF_A}=")


async def test_an_all_503_chain_raises_the_sdks_overloaded_error(
    isolated_home: Path, router: FakeRouter
) -> None:
    router.script(A, Reply(status=503, repeat=True))
    router.script(B, Reply(status=503, repeat=True))
    async with serve(isolated_home, router, retries=0) as (_, root, _):
        with pytest.raises(anthropic.OverloadedError):
            await sdk_call(root, "messages.create", **BODY)


# -- probes, model list, count_tokens ---------------------------------------------------------


async def test_the_head_probes_answer_without_the_token_and_get_slash_is_the_status_page(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router, auth={"token": GW_TOKEN}) as (http, root, _):
        for path in ("/", "/api/hello"):
            async with http.head(f"{root}{path}") as r:
                assert r.status == 200, path
        async with http.get(f"{root}/") as r:
            assert r.status == 200 and r.content_type == "text/html"


async def test_the_anthropic_model_list_pages_and_one_model_is_a_model_info(
    isolated_home: Path, router: FakeRouter
) -> None:
    """``anthropic-version`` switches /v1/models to Anthropic's list (``limit``, ``after_id``)
    and /v1/models/{id} to one ModelInfo; without it the OpenAI list is unchanged."""
    async with serve(isolated_home, router) as (http, root, _):
        async with http.get(f"{root}/v1/models?limit=1", headers=ANTHROPIC_HEADERS) as r:
            first = await r.json()
        async with http.get(
            f"{root}/v1/models", params={"after_id": first["last_id"]}, headers=ANTHROPIC_HEADERS
        ) as r:
            rest = await r.json()
        async with http.get(f"{root}/v1/models?limit=0", headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 400
            assert "limit" in (await anthropic_error(r))["message"]
        async with http.get(f"{root}/v1/models/{REF_B}", headers=ANTHROPIC_HEADERS) as r:
            one = await r.json()
        async with http.get(f"{root}/v1/models/org/none", headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 404
            assert (await anthropic_error(r))["type"] == "not_found_error"
        async with http.get(f"{root}/v1/models") as r:
            openai = await r.json()
        info = await sdk_call(root, "models.retrieve", REF_A)
    assert [m["id"] for m in first["data"]] == ["coderclaw"]
    assert first["has_more"] is True and first["first_id"] == first["last_id"] == "coderclaw"
    assert {REF_A, REF_B} <= {m["id"] for m in rest["data"]}
    assert "coderclaw" not in {m["id"] for m in rest["data"]}
    assert one["type"] == "model" and one["id"] == REF_B and one["display_name"] == "model-b"
    assert openai["object"] == "list" and "has_more" not in openai
    assert info.id == REF_A and info.type == "model"


async def test_count_tokens_checks_the_body_like_messages(
    isolated_home: Path, router: FakeRouter
) -> None:
    async with serve(isolated_home, router) as (http, root, _):
        body = {k: v for k, v in BODY.items() if k != "max_tokens"}
        async with http.post(f"{root}/v1/messages/count_tokens?beta=true", json=body) as r:
            assert r.status == 200
            counted = await r.json()
        bad = {**body, "messages": [{"role": "user", "content": [{"type": "nope"}]}]}
        async with http.post(f"{root}/v1/messages/count_tokens", json=bad) as r:
            assert r.status == 400
            assert (await anthropic_error(r))["type"] == "invalid_request_error"
    assert counted == {"input_tokens": 5}  # "Hi" (1) + 4 for the message
    assert router.chat_requests() == []


# -- the dialect on the log line and in the metrics -------------------------------------------


@pytest.fixture
def rendered_logs() -> Iterator[io.StringIO]:
    """The gateway's real log pipeline (JSON lines) into a buffer."""
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


async def test_the_log_line_and_metrics_carry_the_messages_dialect(
    isolated_home: Path, router: FakeRouter, rendered_logs: io.StringIO
) -> None:
    """The request's one log line names ``dialect: messages``, the client's model and the ref
    that served; /metrics counts it under ``dialect="messages"``."""
    async with serve(isolated_home, router) as (http, root, _):
        async with http.post(f"{root}/v1/messages", json={**BODY, "stream": True}) as r:
            await r.read()
            request_id = r.headers["x-request-id"]
            assert r.headers["x-coderclaw-model"] == REF_A
        async with http.get(f"{root}/metrics") as r:
            metrics = await r.text()
    lines = [json.loads(line) for line in rendered_logs.getvalue().splitlines() if line]
    [entry] = [e for e in lines if e["event"] == "chat_completion"]
    assert entry["request_id"] == request_id
    assert entry["dialect"] == "messages"
    assert entry["requested"] == CLAUDE
    assert entry["served"] == REF_A
    assert entry["outcome"] == "ok"
    assert 'coderclaw_dialect_requests_total{dialect="messages",outcome="ok"} 1.0' in metrics


async def test_dropped_server_tools_are_named_in_a_header(
    isolated_home: Path, router: FakeRouter
) -> None:
    body = {
        **BODY,
        "tools": [
            {"type": "web_search_20250305", "name": "web_search"},
            {"name": "Bash", "input_schema": {"type": "object"}},
        ],
    }
    async with (
        serve(isolated_home, router) as (http, root, _),
        http.post(f"{root}/v1/messages", json=body) as r,
    ):
        assert r.status == 200
        assert r.headers["x-coderclaw-dropped-tools"] == "web_search"
    sent = router.chat_requests()[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash"]


async def test_the_messages_usage_says_cost_null_when_no_price_is_known(
    isolated_home: Path, router: FakeRouter
) -> None:
    """The engine prices every answer; org/model-a has no price in the built-in catalog, so the
    Messages usage carries ``cost: null`` (SPEC §11: never a made-up 0)."""
    async with (
        serve(isolated_home, router) as (http, root, _),
        http.post(f"{root}/v1/messages", json=BODY) as r,
    ):
        usage = (await r.json())["usage"]
    assert usage == {"input_tokens": 1, "output_tokens": 3, "cost": None}


# -- ping during silence ----------------------------------------------------------------------


def test_the_ping_interval_is_anthropics_fifteen_seconds() -> None:
    assert PING_SECONDS == 15.0


async def test_a_committed_stream_that_falls_silent_gets_pings() -> None:
    """A sink with a short ``ping_seconds`` (the real one is 15 s) sends ``event: ping`` while
    nothing else is written, none while chunks flow, and none after the end."""
    wanted = chat_request({**BODY, "stream": True}, DEFAULT_MODEL_MAP, lambda name: False)

    async def handler(request: web.Request) -> web.StreamResponse:
        request[REQUEST_ID] = "test"
        sink = MessagesSink(request, wanted, "msg_test", ping_seconds=0.1)
        try:
            out = await sink.commit(parse_ref(REF_A), None, {})
            await asyncio.sleep(0.35)  # silent: pings at about 0.1, 0.2, 0.3
            delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": None}
            for _ in range(8):  # chunks every 0.02 s: no ping in between
                await sink.chunks([{"choices": [delta]}])
                await asyncio.sleep(0.02)
            await sink.chunks([{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
            await sink.finish()
            await asyncio.sleep(0.25)  # after the end: nothing more
            return out
        finally:
            sink.close()

    app = web.Application()
    app.router.add_get("/", handler)
    async with (
        serve_app(app) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/") as r,
    ):
        text = (await r.read()).decode()
    events = [block.split("\n")[0].removeprefix("event: ") for block in text.split("\n\n") if block]
    assert events[0] == "message_start"
    first_delta = events.index("content_block_start")
    assert 2 <= events[:first_delta].count("ping") <= 4
    assert "ping" not in events[first_delta:]
    assert events[-1] == "message_stop"


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["coderclaw", "default", "Fast", "fast", REF_B, B, f"{REF_B}:cheapest"],
)
def test_model_map_targets_that_load(isolated_home: Path, router: FakeRouter, target: str) -> None:
    """A modelMap target may be a chain name, an alias (any case) or a ref."""
    write_config(
        isolated_home, router, aliases={"Fast": REF_B}, anthropic={"modelMap": {"*": target}}
    )
    settings = load_settings({"HOME": str(isolated_home)})
    assert settings.config.gateway.anthropic.model_map == {"*": target}


def test_a_model_map_target_that_names_nothing_is_a_config_error(
    isolated_home: Path, router: FakeRouter
) -> None:
    write_config(isolated_home, router, anthropic={"modelMap": {"claude-*": "Fast"}})
    with pytest.raises(ConfigError) as info:
        load_settings({"HOME": str(isolated_home)})
    assert info.value.exit_code == 78
    assert info.value.path == 'gateway.anthropic.modelMap["claude-*"]'


@pytest.mark.parametrize(
    ("requested", "limits", "sent"),
    [
        (128_000, [(8_192, 131_072)], 8_192),  # the catalog's output limit
        (128_000, [(None, 131_072)], 65_536),  # half the context window
        (128_000, [(None, 131_072), (4_096, None)], 4_096),  # the smallest of the chain
        (1_000, [(8_192, 131_072)], 1_000),  # a lower ceiling is kept
        (128_000, [(None, None)], 128_000),  # nothing known: unchanged
        (128_000, [], 128_000),
    ],
)
def test_max_tokens_is_lowered_to_the_chains_known_limit(
    requested: int, limits: list[tuple[int | None, int | None]], sent: int
) -> None:
    """Claude Code's 128,000 ceiling would be refused by a model with a smaller limit."""
    assert clamp_max_tokens(requested, limits) == sent


async def test_claude_codes_max_tokens_reaches_the_router_within_the_models_limit(
    isolated_home: Path, router: FakeRouter
) -> None:
    """With the router's catalog (discovery on), org/model-a's 131,072-token context: a
    128,000 max_tokens goes upstream as at most half of it."""
    async with serve(isolated_home, router, discovery=True) as (http, root, _):

        async def discovered() -> bool:
            async with http.get(f"{root}/v1/models/{REF_A}") as resp:
                return bool((await resp.json()).get("context_length") == 131_072)

        for _ in range(100):  # discovery runs in the background after the start
            if await discovered():
                break
            await asyncio.sleep(0.05)
        body = {**BODY, "max_tokens": 128_000}
        async with http.post(f"{root}/v1/messages", json=body, headers=ANTHROPIC_HEADERS) as resp:
            assert resp.status == 200, await resp.text()
    assert router.chat_requests()[-1].json["max_tokens"] == 65_536
