"""Client connections: the open-file limit, a cap on connections, and a header deadline.

Idle and half-sent connections each hold a file descriptor. Under a default ``ulimit -n`` of
1024 (256 for a launchd agent) a few thousand of them used to make ``accept`` fail, and then
``/healthz`` and chat failed with nothing logged. So, at start:

- the soft ``RLIMIT_NOFILE`` is raised to the hard limit (``raise_open_file_limit``);
- ``ConnectionGate`` is the listening socket's protocol factory. It counts client connections
  and keeps them at ``gateway.limits.maxConnections`` (default: ``default_max_connections``).
  At the cap a new connection takes the place of the connection that has waited longest
  without a request running on it (idle keep-alive, or still sending its headers); when every
  connection is running a request the new one gets a 503 and is closed. One log line says
  the cap was reached (at most one a minute, with the counts);
- a new connection must have sent the headers of its first request within
  ``gateway.timeouts.headerSeconds`` (a slowloris is cut). aiohttp's own keep-alive timer
  (``keepAliveSeconds``) closes idle connections and, as it runs from the accept on, also
  bounds the headers of the requests after the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

from aiohttp import web

from gateway import wire
from gateway.observe import get_logger

log = get_logger("gateway.connections")

# File descriptors kept back from the client connections: the listener, the log, the config
# watcher, the event loop, the catalog cache, and DNS.
RESERVE_FDS = 64
DEFAULT_CAP_CEILING = 4096
# A hard limit of "unlimited" cannot be set as the soft limit on every system (macOS refuses
# more than its per-process maximum): these are tried in turn.
UNLIMITED_TARGETS = (65536, 10240)
LOG_INTERVAL_S = 60.0
REFUSE_LINGER_S = 2.0


def default_max_connections(soft_limit: int) -> int:
    """The connection cap when none is configured: half of what the open-file limit leaves
    after ``RESERVE_FDS`` (a client connection running a request holds an upstream connection
    too), at least 8, at most ``DEFAULT_CAP_CEILING``."""
    return max(8, min(DEFAULT_CAP_CEILING, (soft_limit - RESERVE_FDS) // 2))


def open_file_targets(soft: int, hard: int) -> tuple[int, ...]:
    """The soft limits to try, best first; empty when the soft limit is already the most."""
    if hard == resource.RLIM_INFINITY:
        return tuple(t for t in UNLIMITED_TARGETS if t > soft)
    return (hard,) if hard > soft else ()


def raise_open_file_limit() -> tuple[int, int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` as far as allowed; ``(before, after, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    for target in open_file_targets(soft, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    return before, soft, hard


class Admission(Enum):
    ACCEPT = "accept"
    EVICT = "evict"  # close the longest-waiting connection without a request, then accept
    REFUSE = "refuse"  # every connection is running a request: 503 and close


def admit(open_connections: int, waiting: int, limit: int) -> Admission:
    """What to do with a new connection, given how many are open and how many of those have
    no request running."""
    if open_connections < limit:
        return Admission.ACCEPT
    return Admission.EVICT if waiting > 0 else Admission.REFUSE


@dataclass(slots=True)
class _Connection:
    running: int = 0  # requests being handled on it
    started: bool = False  # a request has arrived on it
    deadline: asyncio.TimerHandle | None = None  # the header deadline, until a request came


_REFUSAL_BODY = wire.dumps(
    wire.error_payload(
        "the gateway has gateway.limits.maxConnections client connections open and every one "
        "is running a request; retry shortly, or raise gateway.limits.maxConnections",
        "server_error",
        "too_many_connections",
    )
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap at once. The request is read and dropped until the
    client closes (at most ``REFUSE_LINGER_S``): closing with it unread would reset the
    connection before the client read the answer."""

    _closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's: a cast, not an isinstance.
        transport = cast(asyncio.Transport, transport)
        transport.write(_REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._closer = asyncio.get_running_loop().call_later(REFUSE_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closer is not None:
            self._closer.cancel()


RequestHandlerFn = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class ConnectionGate:
    """The protocol factory in front of aiohttp's ``web.Server`` (see the module docstring).

    Connections are kept in the order of their last activity (accept, or the end of a
    request), so the one evicted at the cap is the one that has waited longest.
    """

    def __init__(
        self,
        server: web.Server,
        *,
        limit: int,
        header_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._server = server
        self.limit = limit
        self.header_seconds = header_seconds
        self._clock = clock
        self._connections: OrderedDict[web.RequestHandler, _Connection] = OrderedDict()
        self._accepted = 0
        self._evicted = 0
        self._refused = 0
        self._logged_at: float | None = None
        inner = server.request_handler
        server.request_handler = self._tracked(inner)

    def __call__(self) -> asyncio.BaseProtocol:
        self._accepted += 1
        if len(self._connections) >= self.limit or self._accepted % 256 == 0:
            self._prune()
        waiting = None
        if len(self._connections) >= self.limit:
            waiting = next((h for h, c in self._connections.items() if c.running == 0), None)
        decision = admit(len(self._connections), 1 if waiting else 0, self.limit)
        if decision is not Admission.ACCEPT:
            self._limit_reached(decision)
        if decision is Admission.REFUSE:
            return _Refuse()
        if decision is Admission.EVICT and waiting is not None:
            del self._connections[waiting]
            waiting.force_close()
        handler = self._server()
        conn = self._connections[handler] = _Connection()
        loop = asyncio.get_running_loop()
        conn.deadline = loop.call_later(self.header_seconds, self._header_deadline, handler)
        return handler

    def _tracked(self, inner: RequestHandlerFn) -> RequestHandlerFn:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            handler = request.protocol
            conn = self._connections.get(handler)
            if conn is None:  # accepted before the gate, or already evicted
                return await inner(request)
            conn.running += 1
            if not conn.started:
                conn.started = True
                if conn.deadline is not None:  # a request came: the timer and its handle go
                    conn.deadline.cancel()
                    conn.deadline = None
            try:
                return await inner(request)
            finally:
                conn.running -= 1
                if handler in self._connections:
                    self._connections.move_to_end(handler)

        return handle

    def _prune(self) -> None:
        for handler in [h for h in self._connections if h.transport is None]:
            del self._connections[handler]

    def _header_deadline(self, handler: web.RequestHandler) -> None:
        conn = self._connections.get(handler)
        if conn is not None and not conn.started and handler.transport is not None:
            del self._connections[handler]
            handler.force_close()

    def _limit_reached(self, decision: Admission) -> None:
        if decision is Admission.EVICT:
            self._evicted += 1
        else:
            self._refused += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL_S:
            return
        self._logged_at = now
        log.warning(
            "connection_limit_reached",
            limit=self.limit,
            evicted=self._evicted,
            refused=self._refused,
            hint="idle connections are closed to make room; raise gateway.limits."
            "maxConnections (and the open-file limit) if the clients are real",
        )
        self._evicted = self._refused = 0


class GatedSite(web.TCPSite):
    """A ``TCPSite`` whose connections go through a ``ConnectionGate``."""

    __slots__ = ("gate",)

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, gate: ConnectionGate, backlog: int
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.gate, self._host, self._port, backlog=self._backlog
        )
        with contextlib.suppress(AttributeError, IndexError):
            self._bound_port = self._server.sockets[0].getsockname()[1]
