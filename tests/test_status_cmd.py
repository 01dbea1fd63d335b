"""``coderclaw status``: a real child process reading the running gateway's ``/status.json``."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.cli_helpers import child_env, run_cli
from tests.daemon_harness import free_port
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import run_gateway

A, B = "huggingface/org/model-a", "huggingface/org/model-b"
GATEWAY_TOKEN = "cc-status-cmd-token-0123456789"


async def test_status_prints_the_chain_spend_and_last_requests_of_the_running_gateway(
    isolated_home: Path, router: FakeRouter
) -> None:
    """After a failover: the table shows the primary open with its reason and the request
    served by the fallback; ``--json`` is the gateway's document (the token from the
    settings is sent: the gateway requires one here)."""
    env = {"CODERCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN}
    async with (
        run_gateway(isolated_home, router, env=env, retries=0) as (base, _),
        aiohttp.ClientSession() as session,
    ):
        router.script("org/model-a", Reply(status=503))
        body = {"model": "coderclaw", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
        async with session.post(f"{base}/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
        port = base.removesuffix("/v1").rsplit(":", 1)[1]
        child = child_env(isolated_home, **env)
        run = await run_cli("status", "--port", port, env=child)
        assert run.code == 0, run.text
        lines = run.out.splitlines()
        primary = next(line for line in lines if line.startswith("1 ") and A in line)
        assert "open" in primary and "503" in primary  # the breaker's reason
        newest = next(line for line in lines if B in line and "ok" in line)
        assert "chat" in newest
        assert "spend today: $0.00" in run.out
        run = await run_cli("status", "--port", port, "--json", env=child)
        assert run.code == 0, run.text
        doc = json.loads(run.out)
        assert [c["state"] for c in doc["chain"]] == ["open", "closed"]
        assert doc["recent"][0]["served"] == B
        assert doc["recent"][0]["attempts"] == f"{A}=503,{B}=200"
        assert set(doc["spend"]) >= {
            "today_usd", "month_usd", "daily_budget_usd", "monthly_budget_usd"
        }


async def test_status_without_a_running_gateway_says_so_and_exits_1(isolated_home: Path) -> None:
    """Nothing listens on the port: a message that says how to start it, exit status 1."""
    run = await run_cli("status", "--port", str(free_port()), env=child_env(isolated_home))
    assert run.code == 1
    assert "not running" in run.err and "coderclaw gateway" in run.err
