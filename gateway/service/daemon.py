"""The foreground gateway process: listen, notify systemd, drain on SIGTERM, reload on SIGHUP.

Lifecycle:
    load settings (ConfigError → exit 78)  →  raise the open-file limit  →  listen through a
                                              ConnectionGate (cap, header deadline)  →  READY=1
    SIGHUP or an edit of the config file   →  reload (invalid: logged, the old config stays)
    SIGTERM / SIGINT                       →  STOPPING=1, stop accepting, let requests and
                                              streams finish for gateway.drainSeconds, then
                                              cancel what is left (streams get an SSE error)
    a second SIGINT                        →  exit at once (130)

The drain is done here rather than by aiohttp's ``shutdown_timeout``: aiohttp waits for the
timeout twice and closes the connection before a cancelled stream can write its error event.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.app_state import SETTINGS, TRAFFIC
from gateway.errors import ConfigError, GatewayError
from gateway.observe import get_logger, setup_logging
from gateway.server import begin_drain, make_app
from gateway.service.connections import (
    ConnectionGate,
    GatedSite,
    default_max_connections,
    raise_open_file_limit,
)
from gateway.service.notify import Notifier
from gateway.settings import Settings, load_settings

log = get_logger("gateway.daemon")

CONFIG_POLL_SECONDS = 1.0
GC_THRESHOLD = 10_000  # the cyclic collector's gen-0 threshold in the daemon (default 700)
# After the grace period: how long cancelled requests get to write their last bytes. A stop
# takes at most drainSeconds + 2 * CANCEL_SECONDS; the unit's TimeoutStopSec must exceed it.
CANCEL_SECONDS = 1.0


def _tune_collector() -> None:
    """Once the daemon is up. Everything built so far lives as long as the process: it is
    kept out of the cyclic collector's passes (measured: a 23 ms gen-2 pause under load drops
    to 2 ms). A request's objects die by reference counting; at the default gen-0 threshold
    (700 objects allocated and not yet freed) the collector ran every request or two over the
    objects of the requests in flight: 4 % of a proxied request's instructions (callgrind),
    100-1,000 µs a pass on one connection's path, 1,478 passes in a 20 s load run. At
    ``GC_THRESHOLD`` the same run had one."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the config (and survive reloads)."""

    port: int | None = None
    bind: str | None = None
    host: str | None = None

    def load(self) -> Settings:
        settings = load_settings(port=self.port, bind=self.bind, host=self.host)
        check_bind_safety(settings)
        return settings


def check_bind_safety(settings: Settings) -> None:
    if not settings.is_loopback and settings.gateway_token is None:
        raise ConfigError(
            f"refusing to listen on {settings.host} without a gateway token",
            hint="set gateway.auth.token in the config or CODERCLAW_GATEWAY_TOKEN in "
            f"{settings.paths.env_file}, or bind to loopback",
        )


def run_gateway(overrides: Overrides) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    settings = overrides.load()
    cfg = settings.config.logging
    setup_logging(cfg.level, cfg.format, settings.secrets(), cache=True)
    for warning in settings.warnings:
        log.warning("settings_warning", detail=warning)
    before, soft, hard = raise_open_file_limit()
    log.info("open_file_limit", soft=soft, hard=hard, raised_from=before)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Daemon(settings, overrides, open_files=soft).serve())


class Daemon:
    def __init__(self, settings: Settings, overrides: Overrides, *, open_files: int) -> None:
        self.overrides = overrides
        self.open_files = open_files
        self.gate: ConnectionGate | None = None
        self.notifier = Notifier(settings.env)
        self.app = make_app(settings)
        self.live = self.app[SETTINGS]
        self.traffic = self.app[TRAFFIC]
        self.stop = asyncio.Event()
        self._sigint_count = 0
        self._config_mtime = _mtime(settings.paths.config)
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(self) -> int:
        settings = self.live.current
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            shutdown_timeout=CANCEL_SECONDS,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=settings.config.gateway.timeouts.keep_alive_seconds,
        )
        await runner.setup()
        assert runner.server is not None
        self.gate = ConnectionGate(
            runner.server,
            limit=self._max_connections(settings),
            header_seconds=settings.config.gateway.timeouts.header_seconds,
        )
        site = GatedSite(runner, settings.host, settings.port, gate=self.gate, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"port {settings.port} on {settings.host} is already in use",
                    hint="stop the other process (is the gateway already running? "
                    "`coderclaw gateway status`) or pass --port",
                ) from None
            raise GatewayError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
        url = f"http://{settings.host}:{settings.port}/v1"
        log.info(
            "gateway_listening",
            url=url,
            primary=str(settings.chain[0]),
            fallbacks=[str(r) for r in settings.chain[1:]],
            token=settings.token_source is not None,
            max_connections=self.gate.limit,
        )
        _tune_collector()
        self.notifier.ready(f"serving {url}")
        self._install_signals()
        watch = self._spawn(self._watch_config(), "config-watch")
        if self.notifier.watchdog_interval:
            self._spawn(self._watchdog(), "watchdog")
        await self.stop.wait()

        watch.cancel()
        await self._drain(runner)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._restore_signals()
        log.info("gateway_stopped")
        return 0

    async def _drain(self, runner: web.AppRunner) -> None:
        """Stop accepting; give requests in flight the grace period; cancel what is left."""
        grace = self.live.current.config.gateway.drain_seconds
        self.notifier.stopping()
        begin_drain(self.app)
        for site in runner.sites:
            await site.stop()
        if runner.server is not None:
            runner.server.pre_shutdown()  # keep-alive connections take no further request
        log.info("gateway_draining", grace_s=grace, streams=self.traffic.open_streams)
        pending = set(self.traffic.in_flight)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning("gateway_drain_timeout", grace_s=grace, cancelled=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CANCEL_SECONDS)
        await runner.cleanup()

    def _max_connections(self, settings: Settings) -> int:
        configured = settings.config.gateway.limits.max_connections
        return configured or default_max_connections(self.open_files)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- signals -----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _restore_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            log.warning("gateway_exit_now", reason="second SIGINT")
            os._exit(130)
        self.stop.set()

    def _on_sighup(self) -> None:
        if not self.stop.is_set():
            self._spawn(self.reload("SIGHUP"), "reload")

    # -- reload ------------------------------------------------------------------------------

    async def reload(self, reason: str) -> bool:
        """Load the config again; apply it if valid. Returns whether it was applied."""
        async with self._reload_lock:
            self._config_mtime = _mtime(self.live.current.paths.config)
            self.notifier.reloading(time.monotonic_ns() // 1000)
            try:
                # In a thread: loading may run the login shell (env.shellEnv).
                new = await asyncio.to_thread(self.overrides.load)
            except GatewayError as exc:
                log.error("config_reload_failed", reason=reason, error=str(exc), kept="previous")
                self.notifier.ready("reload failed; serving the previous config")
                return False
            except Exception:
                # A bug, not a bad file: keep serving the old config and say so loudly.
                log.exception("config_reload_crashed", reason=reason, kept="previous")
                self.notifier.ready("reload failed; serving the previous config")
                return False
            if self.stop.is_set():  # stopped while loading: READY=1 now would confuse systemd
                return False
            self._apply(new, reason)
            return True

    def _apply(self, new: Settings, reason: str) -> None:
        old = self.live.current
        if (new.host, new.port) != (old.host, old.port):
            log.warning(
                "config_needs_restart",
                setting="port/bind",
                listening=f"{old.host}:{old.port}",
                configured=f"{new.host}:{new.port}",
            )
        if new.config.gateway.timeouts.keep_alive_seconds != (
            old.config.gateway.timeouts.keep_alive_seconds
        ):
            log.warning("config_needs_restart", setting="gateway.timeouts.keepAliveSeconds")
        if self.gate is not None:
            self.gate.limit = self._max_connections(new)
            self.gate.header_seconds = new.config.gateway.timeouts.header_seconds
        self.live.apply(new)
        cfg = new.config.logging
        setup_logging(cfg.level, cfg.format, new.secrets(), cache=True)
        for warning in new.warnings:
            log.warning("settings_warning", detail=warning)
        log.info(
            "config_reloaded",
            reason=reason,
            primary=str(new.chain[0]),
            fallbacks=[str(r) for r in new.chain[1:]],
        )
        self.notifier.ready(f"serving http://{old.host}:{old.port}/v1 (reloaded)")

    async def _watch_config(self) -> None:
        path = self.live.current.paths.config
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            if _mtime(path) != self._config_mtime:
                await self.reload("config file changed")

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval or 1.0
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def _mtime(path: os.PathLike[str]) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
