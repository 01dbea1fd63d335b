"""Budgets at admission: a spent daily budget refuses requests with 429 ``budget_exceeded``
(nothing sent upstream) until the next local day, on the gateway's injected clock."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest

from gateway.app_state import LEDGER, REFRESHER
from gateway.ledger.usage import recent
from tests.fake_router import FakeRouter, make_model_entry
from tests.gateway_harness import eventually, run_gateway

A = "org/model-a"
# $5,000 per million tokens: one request of a few tokens costs about $0.02, past $0.01.
PRICEY = {"provider": "together", "pricing": {"input": 5000.0, "output": 5000.0}}
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


class SetClock:
    """Wall time set by the test (starting at noon UTC); monotonic time is the real one."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._base = time.monotonic()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return self.now + (time.monotonic() - self._base)


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter(models=[make_model_entry(A, [PRICEY])]) as fake:
        yield fake


def chat_posts(router: FakeRouter) -> int:
    return sum(1 for r in router.requests if r.path.endswith("/chat/completions"))


async def test_a_spent_daily_budget_refuses_every_request_until_the_next_day(
    isolated_home: Path, router: FakeRouter
) -> None:
    """$0.01 a day: the first request spends it; the next ones (stream and not) get 429
    ``budget_exceeded`` naming the budget and the reset (next UTC midnight), a Retry-After of
    the seconds until then, and the router sees nothing; each refusal is a ledger row. The
    next day (clock moved on) requests flow again."""
    clock = SetClock(NOON)
    async with (
        run_gateway(
            isolated_home,
            router,
            discovery=True,
            clock=clock,
            budget={"dailyUsd": 0.01, "timeZone": "UTC"},
        ) as (base, view),
        aiohttp.ClientSession() as session,
    ):
        await eventually(lambda: view.app[REFRESHER].refreshes >= 1)
        ledger = view.app[LEDGER]
        body = {"model": f"huggingface/{A}", "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{base}/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert float(resp.headers["x-coderclaw-cost-usd"]) > 0.01
        await eventually(lambda: ledger.spent(clock.time())[0] >= 0.01)
        sent = chat_posts(router)
        for stream in (False, True):
            async with session.post(
                f"{base}/chat/completions", json={**body, "stream": stream}
            ) as resp:
                assert resp.status == 429
                error = (await resp.json())["error"]
                retry_after = int(resp.headers["Retry-After"])
                assert resp.headers["x-request-id"]
            assert error["code"] == "budget_exceeded"
            assert error["type"] == "rate_limit_error"
            assert "daily budget of $0.01" in error["message"]
            assert "2026-12-02T00:00+00:00" in error["message"]  # the reset, local midnight
            assert "gateway.budget.dailyUsd" in error["message"]  # what to change
            assert abs(retry_after - 12 * 3600) <= 2
        assert chat_posts(router) == sent  # nothing went upstream
        clock.now += DAY  # the next day
        async with session.post(f"{base}/chat/completions", json=body) as resp:
            assert resp.status == 200
        assert chat_posts(router) == sent + 1
        assert await ledger.drain()
    with sqlite3.connect(isolated_home / ".coderclaw" / "coderclaw.db") as conn:
        outcomes = [r.outcome for r in recent(conn, 10)[::-1]]
    assert outcomes == ["ok", "budget_exceeded", "budget_exceeded", "ok"]


async def test_the_responses_and_messages_apis_are_refused_in_their_own_shapes(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Once the day's budget is spent, ``POST /v1/responses`` (openai SDK) and
    ``POST /v1/messages`` (anthropic SDK) get 429 ``budget_exceeded`` too — the OpenAI error
    object, and Anthropic's ``rate_limit_error`` — each with the reset in its message and a
    Retry-After; nothing is sent upstream."""
    clock = SetClock(NOON)
    async with run_gateway(
        isolated_home,
        router,
        discovery=True,
        clock=clock,
        budget={"dailyUsd": 0.01, "timeZone": "UTC"},
    ) as (base, view):
        await eventually(lambda: view.app[REFRESHER].refreshes >= 1)
        ledger = view.app[LEDGER]
        async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            await client.responses.create(model=f"huggingface/{A}", input="hi")
            await eventually(lambda: ledger.spent(clock.time())[0] >= 0.01)
            sent = chat_posts(router)
            with pytest.raises(openai.RateLimitError) as refused:
                await client.responses.create(model=f"huggingface/{A}", input="hi")
        error = refused.value.body
        assert isinstance(error, dict) and error["code"] == "budget_exceeded"
        assert "2026-12-02T00:00+00:00" in error["message"]
        assert abs(int(refused.value.response.headers["retry-after"]) - 12 * 3600) <= 2
        async with anthropic.AsyncAnthropic(
            base_url=base.removesuffix("/v1"), api_key="x", max_retries=0
        ) as claude:
            with pytest.raises(anthropic.RateLimitError) as limited:
                await claude.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=20,
                    messages=[{"role": "user", "content": "hi"}],
                )
        assert limited.value.body["error"]["type"] == "rate_limit_error"
        assert "daily budget of $0.01" in limited.value.body["error"]["message"]
        assert int(limited.value.response.headers["retry-after"]) > 0
        assert chat_posts(router) == sent
