"""The app's shared state: one typed ``web.AppKey`` per resource.

``make_app`` sets the plain values (settings, metrics, breaker, traffic, clock); the
resources that must be closed (the upstream client and its session, the catalog refresher,
the chain engine and its pending log lines; the state dir's database, the ledger and the
Responses store; the shared state of several replicas) are created and closed in
``server._storage``, ``server._resources`` and ``server._shared``, ``cleanup_ctx``s.
Handlers read them with ``request.app[KEY]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.breaker import Breaker
from gateway.discovery import CatalogRefresher
from gateway.engine import ChainEngine, Clock
from gateway.ledger.db import Database
from gateway.ledger.responses import ResponseStore
from gateway.ledger.usage import LedgerWriter
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.shared.link import SharedLink
from gateway.upstream import Upstream


class LiveSettings:
    """The settings in force; replaced whole on reload, with a callback per dependent part."""

    def __init__(self, settings: Settings) -> None:
        self.current = settings
        self._listeners: list[Callable[[Settings], None]] = []

    def on_change(self, listener: Callable[[Settings], None]) -> None:
        self._listeners.append(listener)

    def apply(self, settings: Settings) -> None:
        """Use ``settings`` for every request from now on (config reload)."""
        self.current = settings
        for listener in self._listeners:
            listener(settings)


@dataclass
class Traffic:
    """The requests being handled: the daemon's drain waits for or cancels them."""

    draining: bool = False
    open_streams: int = 0
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)


SETTINGS = web.AppKey("settings", LiveSettings)
METRICS = web.AppKey("metrics", Metrics)
BREAKER = web.AppKey("breaker", Breaker)  # per-model circuit breaker (SPEC §9)
TRAFFIC = web.AppKey("traffic", Traffic)
CLOCK = web.AppKey("clock", Clock)
STARTED = web.AppKey("started", float)  # wall-clock start, the ``created`` of /v1/models
UPSTREAM = web.AppKey("upstream", Upstream)
REFRESHER = web.AppKey("refresher", CatalogRefresher)
ENGINE = web.AppKey("engine", ChainEngine)
DATABASE = web.AppKey("database", Database)  # the state dir's SQLite file
LEDGER = web.AppKey("ledger", LedgerWriter)  # one usage row per request; the spend so far
RESPONSES = web.AppKey("responses", ResponseStore)  # the Responses API store
SHARED = web.AppKey("shared", SharedLink)  # the state shared with other replicas (SPEC §13)
REQUEST_ID = web.RequestKey("request_id", str)
# The CORS headers the origin guard allows for this request (empty for most).
CORS_HEADERS = web.RequestKey("cors_headers", Mapping[str, str])
