"""The real gateway app and a FakeRouter on their own event loop in a background thread.

For tests driven by synchronous clients (hypothesis properties, schemathesis, raw sockets):
``with gateway_in_thread(home, ...) as gw:`` yields the base URL while both servers run.
``gw.run(coro)`` runs a coroutine on the gateway's loop (to script the fake router, say).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.fake_router import FakeRouter
from tests.gateway_harness import GatewayView, run_gateway

T = TypeVar("T")


@dataclass
class ThreadedGateway:
    base: str  # http://127.0.0.1:port/v1
    state: GatewayView
    router: FakeRouter
    loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event = field(repr=False)

    @property
    def root(self) -> str:
        return self.base.removesuffix("/v1")

    @property
    def port(self) -> int:
        port = urlsplit(self.base).port
        assert port is not None
        return port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


@contextmanager
def gateway_in_thread(
    home: Path, *, env: dict[str, str] | None = None, **gateway: Any
) -> Iterator[ThreadedGateway]:
    """Start a FakeRouter and the gateway (``run_gateway``'s config) on a loop in a thread."""
    ready: list[ThreadedGateway] = []
    failure: list[BaseException] = []
    started = threading.Event()

    async def main() -> None:
        stop = asyncio.Event()
        try:
            async with (
                FakeRouter() as router,
                run_gateway(home, router, env=env, **gateway) as (base, state),
            ):
                loop = asyncio.get_running_loop()
                ready.append(ThreadedGateway(base, state, router, loop, stop))
                started.set()
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="gateway", daemon=True)
    thread.start()
    started.wait(15)
    if not ready:
        thread.join(5)
        raise RuntimeError(f"the gateway did not start: {failure!r}")
    gw = ready[0]
    try:
        yield gw
    finally:
        gw.loop.call_soon_threadsafe(gw._stop.set)
        thread.join(15)
