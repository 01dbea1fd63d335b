"""Run the real gateway app on 127.0.0.1 port 0 against a FakeRouter, configured by a real file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app_state import BREAKER, SETTINGS, TRAFFIC, UPSTREAM
from gateway.breaker import Breaker
from gateway.engine import Clock
from gateway.server import make_app
from gateway.settings import Settings, load_settings
from tests.fake_router import FakeRouter

TOKEN = "hf_testtokenABCDEFGHIJKLMNOP1234"


@asynccontextmanager
async def serve_app(app: web.Application, **runner_options: Any) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 at a free port (yielded); cleaned up at the end of the block."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Return once ``condition()`` is true (polled every 50 ms); TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


class GatewayView:
    """What the tests read of a running gateway app, through its app keys."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def settings(self) -> Settings:
        return self.app[SETTINGS].current

    @property
    def cooldowns(self) -> Breaker:
        """The per-model breaker (its ``fail`` / ``cooling_until`` as the old cooldowns')."""
        return self.app[BREAKER]

    @property
    def breaker(self) -> Breaker:
        return self.app[BREAKER]

    @property
    def open_streams(self) -> int:
        return self.app[TRAFFIC].open_streams

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.app[UPSTREAM].session


def write_config(home: Path, router: FakeRouter, **gateway: Any) -> Path:
    """A config file whose huggingface provider is the fake router."""
    chain = gateway.pop("chain", ["huggingface/org/model-a", "huggingface/org/model-b"])
    aliases = gateway.pop("aliases", {})
    config = {
        "agents": {
            "defaults": {
                "model": {"primary": chain[0], "fallbacks": chain[1:]},
                "models": {ref: {"alias": alias} for alias, ref in aliases.items()},
            }
        },
        "models": {
            "providers": {
                "huggingface": {
                    "baseUrl": router.base_url,
                    "hubUrl": router.url,
                    "discovery": {"enabled": gateway.pop("discovery", False)},
                }
            }
        },
        "gateway": {
            "timeouts": gateway.pop(
                "timeouts",
                {"connectSeconds": 2, "firstTokenSeconds": 2, "idleSeconds": 2,
                 "totalSeconds": 30},
            ),
            **gateway,
        },
    }
    state = home / ".coderclaw"
    state.mkdir(exist_ok=True, mode=0o700)
    path = state / "coderclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@asynccontextmanager
async def run_gateway(
    home: Path, router: FakeRouter, *, token: str | None = TOKEN, env: dict[str, str] | None = None,
    clock: Clock | None = None, **gateway: Any,
) -> AsyncIterator[tuple[str, GatewayView]]:
    """Yield (base URL ending in /v1, the app state) of a gateway serving on 127.0.0.1:0;
    ``clock`` replaces the real one (cooldowns, the log line's times)."""
    write_config(home, router, **gateway)
    environ = {"HOME": str(home), **(env or {})}
    if token:
        environ["HF_TOKEN"] = token
    settings: Settings = load_settings(environ)
    app = make_app(settings, clock=clock)
    async with serve_app(app, handler_cancellation=True, shutdown_timeout=1) as port:
        yield f"http://127.0.0.1:{port}/v1", GatewayView(app)
