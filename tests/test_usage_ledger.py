"""The usage ledger wired into the gateway: one row per request, priced by the provider that
served, summed by a real ``coderclaw usage`` child process.

The fake router's per-provider prices reach the gateway the real way, through discovery
(``_PROVIDER_STATS`` → ``providers[].pricing``); the expected tokens are the fake's own counts
(words of the messages, words of the answer), the expected cost those tokens times the price
in the fake's model list.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app_state import LEDGER, REFRESHER
from gateway.ledger.usage import recent
from tests.cli_helpers import child_env, run_cli
from tests.fake_router import FakeRouter, Reply, make_model_entry
from tests.gateway_harness import eventually, run_gateway
from tests.test_usage_cmd import check_json

A, B = "org/model-a", "org/model-b"
REF_A, REF_B = f"huggingface/{A}", f"huggingface/{B}"
MODELS = [
    make_model_entry(A, ["together", "novita"]),
    make_model_entry(B, ["novita", "fireworks-ai"]),  # fireworks-ai has no pricing
]


class ShiftClock:
    """The real clock, whose monotonic time the test can move on (past the cooldowns)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time()


@pytest.fixture
async def router() -> Any:
    async with FakeRouter(models=[dict(m) for m in MODELS]) as fake:
        yield fake


def price(model: str, provider: str) -> tuple[float, float] | None:
    for entry in MODELS:
        if entry["id"] == model:
            for offer in entry["providers"]:
                if offer["provider"] == provider and "pricing" in offer:
                    return offer["pricing"]["input"], offer["pricing"]["output"]
    return None


@dataclass
class Case:
    """One request: what the fake answers and what the ledger must then hold."""

    ask: str  # the requested ref
    replies: dict[str, list[Reply]]
    stream: bool
    include_usage: bool = False
    served: str | None = None  # the bare model id that answers
    provider: str | None = None
    outcome: str = "ok"


def cases() -> list[Case]:
    ok_a = Reply(provider="together")
    out: list[Case] = []
    out += [Case(REF_A, {A: [ok_a]}, False, served=A, provider="together") for _ in range(7)]
    out += [
        Case(REF_B, {B: [Reply(provider="novita", usage="separate")]}, True, True, B, "novita")
        for _ in range(6)
    ]
    # Not asked: no usage chunk reaches the client, the ledger still has the tokens.
    out += [
        Case(REF_A, {A: [Reply(provider="novita", usage="separate")]}, True, False, A, "novita")
        for _ in range(4)
    ]
    out += [
        Case(REF_B, {B: [Reply(provider="fireworks-ai")]}, False, served=B, provider="fireworks-ai")
        for _ in range(3)
    ]
    out += [
        Case(REF_A, {A: [Reply(status=400, error_code="")]}, False, outcome="client_error_400")
        for _ in range(3)
    ]
    failover = {A: [Reply(status=503)], B: [Reply(provider="novita", usage="separate")]}
    out += [Case(REF_A, failover, True, True, B, "novita") for _ in range(3)]
    out += [Case(REF_A, {A: [Reply(status=503)], B: [Reply(status=503)]}, False,
                 outcome="failed_503") for _ in range(3)]
    out.append(Case(REF_A, {A: [ok_a]}, True, True, A, "together"))
    assert len(out) == 30
    return out


async def send(session: aiohttp.ClientSession, base: str, case: Case, i: int) -> dict[str, Any]:
    """Send one request; the usage the client saw (None: none) and the usage-only chunks."""
    body: dict[str, Any] = {
        "model": case.ask,
        "messages": [{"role": "user", "content": " ".join(["word"] * (i + 1))}],
        "stream": case.stream,
    }
    if case.include_usage:
        body["stream_options"] = {"include_usage": True}
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        raw = await resp.read()
        headers = resp.headers
    if not case.stream:
        data = json.loads(raw)
        return {"status": resp.status, "usage": data.get("usage"), "usage_chunks": 0,
                "cost_header": headers.get("x-coderclaw-cost-usd")}
    events = [json.loads(b[6:]) for b in raw.split(b"\n\n") if b.startswith(b"data: {")]
    usage_only = [e for e in events if e.get("choices") == [] and e.get("usage")]
    return {"status": resp.status, "usage": usage_only[0]["usage"] if usage_only else None,
            "usage_chunks": len(usage_only), "cost_header": headers.get("x-coderclaw-cost-usd")}


async def test_thirty_requests_give_thirty_priced_rows_that_coderclaw_usage_sums_exactly(
    isolated_home: Path, router: FakeRouter
) -> None:
    """Two models, three providers, stream and not, failovers and failures: 30 rows whose
    tokens are the fake's counts and whose cost is those tokens times the serving provider's
    discovered price (None for fireworks-ai, which has none, and for failed requests, never
    0); a stream client that did not ask for usage gets no usage chunk; ``coderclaw usage
    --by model|provider --json`` sums the rows exactly."""
    clock = ShiftClock()
    seen: list[dict[str, Any]] = []
    async with (
        run_gateway(isolated_home, router, discovery=True, clock=clock, retries=0) as (base, view),
        aiohttp.ClientSession() as session,
    ):
        await eventually(lambda: view.app[REFRESHER].refreshes >= 1)
        for i, case in enumerate(cases()):
            for model, replies in case.replies.items():
                router.script(model, *replies)
            seen.append(await send(session, base, case, i))
            clock.offset += 120  # past any cooldown: every case starts from a closed chain
        assert await view.app[LEDGER].drain()
        async with session.get(f"{base.removesuffix('/v1')}/metrics") as resp:
            metrics = await resp.text()
    db = isolated_home / ".coderclaw" / "coderclaw.db"
    with sqlite3.connect(db) as conn:
        rows = recent(conn, 100)[::-1]
    assert len(rows) == 30
    for i, (case, row, got) in enumerate(zip(cases(), rows, seen, strict=True)):
        assert row.dialect == "chat"
        assert row.requested == case.ask
        assert row.outcome == case.outcome, (i, row)
        assert row.served == (f"huggingface/{case.served}" if case.served else None)
        assert row.provider == case.provider
        if case.served is None:
            assert (row.input_tokens, row.output_tokens, row.cost_usd) == (None, None, None)
            continue
        tokens_in, tokens_out = i + 1, 3  # i+1 times "word"; "Hello from <model>"
        assert (row.input_tokens, row.output_tokens) == (tokens_in, tokens_out), (i, row)
        assert row.ttft_ms is not None and row.total_ms is not None
        p = price(case.served, case.provider or "")
        expected = None if p is None else (tokens_in * p[0] + tokens_out * p[1]) / 1e6
        if expected is None:
            assert row.cost_usd is None, row
        else:
            assert row.cost_usd == pytest.approx(expected, rel=1e-12)
        if case.stream and not case.include_usage:
            assert got["usage_chunks"] == 0  # not asked: not sent
        elif got["usage"] is not None:
            assert got["usage"]["prompt_tokens"] == tokens_in
            assert got["usage"]["cost"] == row.cost_usd  # the client's cost is the ledger's
        if not case.stream:
            header = got["cost_header"]
            assert (header is None) == (expected is None)
            if expected is not None:
                assert float(header) == pytest.approx(expected, abs=1e-10)
    assert any(r.cost_usd is None and r.served for r in rows)  # the unknown price: null
    assert sum(1 for r in rows if "=503" in r.attempts and r.served) == 3  # the failovers
    spent: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.cost_usd is not None and r.served and r.provider:
            spent[r.served, r.provider] = spent.get((r.served, r.provider), 0.0) + r.cost_usd
    assert len(spent) == 3  # model-a at together and novita, model-b at novita
    for (model, provider), usd in spent.items():
        line = f'coderclaw_spend_usd_total{{model="{model}",provider="{provider}"}} '
        [value] = [m.removeprefix(line) for m in metrics.splitlines() if m.startswith(line)]
        assert float(value) == pytest.approx(usd, rel=1e-9)
    env = child_env(isolated_home)
    for by, key_of in (("model", "served"), ("provider", "provider")):
        run = await run_cli("usage", "--by", by, "--since", "2d", "--json", env=env)
        assert run.code == 0, run.text
        check_json(json.loads(run.out), rows, key_of)



async def test_the_status_pages_last_requests_survive_a_restart(
    isolated_home: Path, router: FakeRouter
) -> None:
    """A restarted gateway's ``/status.json`` lists the requests of the one before (read
    from the ledger), newest first, and adds its own."""
    body = {"model": REF_A, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(2):
            async with run_gateway(isolated_home, router) as (base, _):
                for _ in range(2):
                    async with session.post(f"{base}/chat/completions", json=body) as resp:
                        assert resp.status == 200
                        ids.append(resp.headers["x-request-id"])
                async with session.get(f"{base.removesuffix('/v1')}/status.json") as resp:
                    doc = await resp.json()
    assert [r["request_id"] for r in doc["recent"]] == ids[::-1]
