"""A real browser: a page from another local port tries to spend the user's credits.

Headless Chromium (the system's, driven by Playwright; no browser is downloaded) opens an
attacker page served from 127.0.0.1 on another port. The page sends what any web page can
send to 127.0.0.1 without the user's consent: ``fetch(..., {mode: "no-cors"})`` with a JSON
body as ``text/plain``, a ``text/plain`` form whose fields spell a JSON chat request, and a
CORS ``fetch`` with ``application/json`` (which needs a preflight). With the default config
the fake router receives nothing; with the attacker's origin in ``gateway.allowedOrigins``
(the control) the same page gets through, so the attacks are real ones.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Response, async_playwright

from tests.fake_router import FakeRouter
from tests.gateway_harness import eventually, run_gateway, serve_app

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><body>
<form id="form" method="POST" enctype="text/plain" action="{chat}" target="sink">
  <input type="hidden" name='{{"messages":[{{"role":"user","content":"form"}}],"pad":"'
         value='"}}'>
</form>
<iframe name="sink"></iframe>
<script>
const body = JSON.stringify({{messages: [{{role: "user", content: "fetch"}}]}});
const simple = fetch("{chat}", {{method: "POST", mode: "no-cors",
                                  headers: {{"Content-Type": "text/plain"}}, body}});
const cors = fetch("{chat}", {{method: "POST",
                               headers: {{"Content-Type": "application/json"}}, body}});
document.getElementById("form").submit();
Promise.allSettled([simple, cors]).then(([s, c]) => {{
  window.attacked = {{simple: s.status, cors: c.status}};
}});
</script>
</body></html>
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@asynccontextmanager
async def attacker_site() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The attacker's page on its own port of 127.0.0.1: yields the page's URL and a dict
    whose ``"chat"`` the test sets to the gateway's chat URL before the page is opened."""
    target: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.format(chat=target["chat"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}/", target


async def attack(
    chromium: str, profile: Path, page_url: str, chat_url: str, posts: int
) -> tuple[list[int], dict[str, str]]:
    """Open the page; once the attempts are done (``posts`` POST answers seen) return the
    statuses of the gateway's answers to the POSTs (Playwright does not show preflights) and
    how the page's two fetches settled (``fulfilled`` or ``rejected``)."""
    answers: list[Response] = []
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await context.new_page()
            page.on("response", lambda r: answers.append(r) if r.url == chat_url else None)
            await page.goto(page_url)
            await page.wait_for_function("window.attacked !== undefined", timeout=20_000)
            settled = await page.evaluate("window.attacked")
            # The form's answer loads in the iframe, maybe after the fetches settled.
            await eventually(
                lambda: sum(r.request.method == "POST" for r in answers) >= posts, timeout=20
            )
        finally:
            await context.close()
    return sorted(r.status for r in answers if r.request.method == "POST"), settled


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; scripts/bootstrap "
                    "--test installs it)")
    return path


async def test_a_page_on_another_local_port_gets_nothing_to_the_router(
    isolated_home: Path, router: FakeRouter, chromium: str, tmp_path: Path
) -> None:
    """Default config: the no-cors fetch and the form POST reach the gateway and get 403,
    the CORS fetch's preflight is refused (so its POST is never sent and the fetch fails),
    the router sees no chat request."""
    async with attacker_site() as (page_url, target), run_gateway(isolated_home, router) as (
        v1,
        _,
    ):
        target["chat"] = f"{v1}/chat/completions"
        posts, settled = await attack(chromium, tmp_path / "profile", page_url, target["chat"], 2)
    assert posts == [403, 403]  # the no-cors fetch and the form; the CORS fetch sent no POST
    assert settled == {"simple": "fulfilled", "cors": "rejected"}  # no-cors hides the 403
    assert router.chat_requests() == []


async def test_control_with_the_page_origin_allowed_the_same_page_gets_through(
    isolated_home: Path, router: FakeRouter, chromium: str, tmp_path: Path
) -> None:
    """The control: with the attacker's origin in gateway.allowedOrigins the same page's
    three chat requests are served, so the refusals above are the guard's doing, not the
    browser's."""
    async with attacker_site() as (page_url, target), run_gateway(
        isolated_home, router, allowedOrigins=[page_url.rstrip("/")]
    ) as (v1, _):
        target["chat"] = f"{v1}/chat/completions"
        posts, settled = await attack(chromium, tmp_path / "profile", page_url, target["chat"], 3)
    assert posts == [200, 200, 200]
    assert settled == {"simple": "fulfilled", "cors": "fulfilled"}
    assert len(router.chat_requests()) == 3
