"""The status page in a real browser (the system's headless Chromium, driven by Playwright; no
browser is downloaded), and ``/status.json`` behind the gateway token.

``CODERCLAW_STATUS_SCREENSHOT=<path>`` makes the failover test also save its screenshot there
(how ``docs/status-page.png`` is made: ``CODERCLAW_STATUS_SCREENSHOT=docs/status-page.png
.venv/bin/pytest tests/test_status_page.py -k failover``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from gateway.app_state import REFRESHER
from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import eventually, run_gateway
from tests.test_browser import CHROMIUM_FLAGS, find_chromium

A, B = "huggingface/org/model-a", "huggingface/org/model-b"
# The failover test's chain: two models of the fake's catalog, priced by their providers.
PRIMARY, FALLBACK = "deepseek-ai/DeepSeek-V3.2", "Qwen/Qwen3-32B"
GATEWAY_TOKEN = "cc-status-page-token-0123456789"


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium)")
    return path


@asynccontextmanager
async def browser(chromium: str, profile: Path) -> AsyncIterator[BrowserContext]:
    """The system Chromium, headless, with the flags of ``test_browser``."""
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1180, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


def console_errors(page: Page) -> list[str]:
    """Collects the page's console errors and uncaught exceptions from now on."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


async def chat(session: aiohttp.ClientSession, base: str, model: str, **extra: Any) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def test_the_page_shows_a_failover_live_without_a_reload(
    isolated_home: Path, router: FakeRouter, chromium: str, tmp_path: Path
) -> None:
    """The page renders with no console error; after the primary fails (503) and the
    fallback serves, it shows, without a reload, the primary open with its reason and the
    time left, and the request served by the fallback; its screenshot is a real image."""
    chain = [f"huggingface/{PRIMARY}", f"huggingface/{FALLBACK}"]
    async with (
        run_gateway(
            isolated_home, router, chain=chain, discovery=True, retries=0,
            budget={"dailyUsd": 5},
        ) as (base, view),
        aiohttp.ClientSession() as session,
        browser(chromium, tmp_path / "profile") as context,
    ):
        await eventually(lambda: view.app[REFRESHER].refreshes >= 1)
        for stream in (False, True, False):
            router.script(PRIMARY, Reply(provider="novita", content=" ".join(["tok"] * 300)))
            assert await chat(session, base, "coderclaw", stream=stream) == 200
        page = await context.new_page()
        errors = console_errors(page)
        await page.goto(base.removesuffix("/v1") + "/")
        await page.wait_for_function(
            "document.querySelectorAll('#recent tr').length >= 3", timeout=10_000
        )
        assert await page.locator("#chain tr").count() == 2
        assert await page.locator("#chain tr").first.locator(".badge").inner_text() == "closed"
        router.script(PRIMARY, Reply(status=503))
        router.script(FALLBACK, Reply(provider="groq", content=" ".join(["tok"] * 200)))
        assert await chat(session, base, "coderclaw") == 200
        # The next poll (every 2 s) shows it, without a reload.
        await page.wait_for_function(
            """() => {
                const first = document.querySelector('#chain tr');
                const newest = document.querySelector('#recent tr');
                return first && first.querySelector('.badge').textContent === 'open'
                    && newest && newest.textContent.includes('Qwen3-32B');
            }""",
            timeout=10_000,
        )
        primary = await page.locator("#chain tr").first.inner_text()
        assert "503" in primary  # the reason
        assert " s" in primary  # the time left
        newest = await page.locator("#recent tr").first.inner_text()
        assert "groq" in newest and "=503" in newest
        assert "$" in newest  # priced by groq's discovered price
        shot = tmp_path / "status.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        wanted = os.environ.get("CODERCLAW_STATUS_SCREENSHOT")
        if wanted:
            shutil.copyfile(shot, wanted)
        assert errors == []


async def test_with_a_gateway_token_the_page_asks_for_it_and_the_data_needs_it(
    isolated_home: Path, router: FakeRouter, chromium: str, tmp_path: Path
) -> None:
    """The HTML is served without the token (it holds no data); ``/status.json`` without it
    is a 401 in the OpenAI shape; the page asks for the token, and once it is entered shows
    the gateway's data."""
    env = {"CODERCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN}
    async with (
        run_gateway(isolated_home, router, env=env) as (base, _),
        aiohttp.ClientSession() as session,
        browser(chromium, tmp_path / "profile") as context,
    ):
        root = base.removesuffix("/v1")
        async with session.get(f"{root}/status.json") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
        headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
        async with session.get(f"{root}/status.json", headers=headers) as resp:
            assert resp.status == 200
            assert [c["ref"] for c in (await resp.json())["chain"]] == [A, B]
        async with session.get(f"{root}/status") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
        page = await context.new_page()
        await page.goto(f"{root}/")
        await page.locator("#token").wait_for(state="visible", timeout=10_000)
        assert await page.locator("#content").is_hidden()
        await page.fill("#token", GATEWAY_TOKEN)
        await page.click("#login-form button")
        await page.locator("#content").wait_for(state="visible", timeout=10_000)
        await page.wait_for_function(
            "document.querySelectorAll('#chain tr').length === 2", timeout=10_000
        )
        assert A in await page.locator("#chain").inner_text()
        assert await page.locator("#login").is_hidden()
