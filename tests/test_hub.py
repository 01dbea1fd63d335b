"""The Hub token check: whoami-v2 answers classified, and the real request against the fake Hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.hub import (
    PERMISSION,
    TokenCheck,
    TokenStatus,
    check_token,
    check_token_once,
    classify_whoami,
)
from gateway.secret import Secret
from tests.fake_router import USER_NAME, FakeRouter
from tests.gateway_harness import serve_app

TOKEN = "hf_HubTestToken1234567890abcdef"


def _whoami(role: str | None, *, global_perms: Any = None, scoped: Any = None) -> dict[str, Any]:
    access: dict[str, Any] = {"displayName": "t", "role": role}
    if global_perms is not None or scoped is not None:
        access["fineGrained"] = {"global": global_perms or [], "scoped": scoped or []}
    return {
        "type": "user",
        "name": "alice",
        "auth": {"type": "access_token", "accessToken": access},
    }


@pytest.mark.parametrize(
    ("status", "body", "expected", "user"),
    [
        (200, _whoami("write"), TokenStatus.OK, "alice"),
        (200, _whoami("read"), TokenStatus.OK, "alice"),
        (200, {"name": "bob"}, TokenStatus.OK, "bob"),
        (200, _whoami("fineGrained", global_perms=[PERMISSION]), TokenStatus.OK, "alice"),
        (
            200,
            _whoami(
                "fineGrained",
                scoped=[{"entity": {"type": "user", "name": "alice"}, "permissions": [PERMISSION]}],
            ),
            TokenStatus.OK,
            "alice",
        ),
        (
            200,
            _whoami("fineGrained", global_perms=["repo.content.read"]),
            TokenStatus.NO_INFERENCE,
            "alice",
        ),
        (
            200,
            _whoami(
                "fineGrained",
                scoped=[{"entity": {"type": "org", "name": "acme"}, "permissions": [PERMISSION]}],
            ),
            TokenStatus.NO_INFERENCE,
            "alice",
        ),
        (200, _whoami("fineGrained"), TokenStatus.NO_INFERENCE, "alice"),
        (401, {"error": "Invalid credentials in Authorization header"}, TokenStatus.REJECTED, None),
        (403, {"error": {"message": "forbidden"}}, TokenStatus.REJECTED, None),
        (429, {"error": "slow down"}, TokenStatus.UNREACHABLE, None),
        (503, None, TokenStatus.UNREACHABLE, None),
        (200, None, TokenStatus.UNREACHABLE, None),
        (200, ["not", "an", "object"], TokenStatus.UNREACHABLE, None),
    ],
)
def test_classify_whoami(status: int, body: Any, expected: TokenStatus, user: str | None) -> None:
    """Classic roles pass; a fine-grained token needs inference.serverless.write (global or
    user-scoped); 401/403 reject; 429, 5xx and odd bodies mean 'could not check'."""
    check = classify_whoami(status, body)
    assert check.status is expected
    assert check.user == user


def test_rejection_detail_keeps_the_hub_message_and_status() -> None:
    """A rejection says what the Hub said and the HTTP status."""
    check = classify_whoami(401, {"error": "Invalid credentials in Authorization header"})
    assert check.detail == "Invalid credentials in Authorization header (HTTP 401)"
    assert not check.accepted
    assert "rejected" in check.describe()


def test_describe_no_inference_names_the_permission_to_add() -> None:
    """The no-permission outcome is accepted but says which permission is missing."""
    check = TokenCheck(TokenStatus.NO_INFERENCE, user="alice")
    assert check.accepted
    assert "Make calls to Inference Providers" in check.describe()


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(tokens={TOKEN}) as fake:
        yield fake


async def test_fake_hub_accepts_a_token_with_the_permission(router: FakeRouter) -> None:
    """The check sends GET /api/whoami-v2 with the Bearer token and reads the user."""
    check = await check_token_once(router.url, Secret(TOKEN), 5)
    assert check == TokenCheck(TokenStatus.OK, user=USER_NAME, role="fineGrained")
    (request,) = [r for r in router.requests if r.path == "/api/whoami-v2"]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_fake_hub_token_without_permission(router: FakeRouter) -> None:
    """A token the Hub knows but whose permissions lack inference → NO_INFERENCE."""
    router.no_inference_tokens.add("hf_NoInference000000000000")
    check = await check_token_once(router.url + "/", Secret("hf_NoInference000000000000"), 5)
    assert check.status is TokenStatus.NO_INFERENCE
    assert check.user == USER_NAME


async def test_fake_hub_rejects_an_unknown_token_without_echoing_it(router: FakeRouter) -> None:
    """A 401 is REJECTED, and the token is nowhere in the outcome."""
    bad = "hf_NotKnownToTheHub0000000000"
    check = await check_token_once(router.url, Secret(bad), 5)
    assert check.status is TokenStatus.REJECTED
    assert bad not in repr(check) and bad not in check.describe()


async def test_unreachable_hub_is_not_an_exception() -> None:
    """A closed port gives UNREACHABLE with the URL and the error kind, not a crash."""
    router = FakeRouter()
    await router.start()
    url = router.url
    await router.close()
    check = await check_token_once(url, Secret(TOKEN), 5)
    assert check.status is TokenStatus.UNREACHABLE
    assert check.detail is not None and url in check.detail
    assert TOKEN not in check.detail


async def test_slow_hub_times_out_as_unreachable() -> None:
    """A Hub that does not answer within the timeout is UNREACHABLE ('timed out')."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/whoami-v2", slow)
    async with serve_app(app, shutdown_timeout=0.1) as port, aiohttp.ClientSession() as session:
        check = await check_token(session, f"http://127.0.0.1:{port}", Secret(TOKEN), 0.2)
    assert check.status is TokenStatus.UNREACHABLE
    assert check.detail is not None and "timed out" in check.detail
