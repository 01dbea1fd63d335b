"""The upstream connection pool as aiohttp keeps it: counts for metrics, one connection opened."""

from __future__ import annotations

from typing import Any

import aiohttp


async def open_connection(
    connector: aiohttp.BaseConnector, req: aiohttp.ClientRequest, limits: aiohttp.ClientTimeout
) -> bool:
    """Open one connection into the pool; a failure is left for the next request to meet."""
    try:
        conn = await connector.connect(req, [], limits)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False
    conn.release()
    return True


def _pool(connector: aiohttp.BaseConnector) -> Any:
    # aiohttp has no public view of its pool: ``_acquired`` (connections handed out) and
    # ``_conns`` (idle keep-alive connections per host) as of aiohttp 3.14; empty if renamed.
    return getattr(connector, "_acquired", ()), getattr(connector, "_conns", {})


def upstream_connection_counts(connector: aiohttp.BaseConnector | None) -> tuple[int, int]:
    """(active, idle) connections of an aiohttp connector. An idle entry whose peer has
    already closed it holds no socket: not counted."""
    if connector is None or connector.closed:
        return 0, 0
    acquired, pools = _pool(connector)
    return len(acquired), sum(idle_connections(connector, key) for key in pools)


def idle_connections(connector: aiohttp.BaseConnector, key: Any) -> int:
    """Idle keep-alive connections to one host (a ``ClientRequest.connection_key``)."""
    _, pools = _pool(connector)
    return sum(1 for proto, _ in pools.get(key, ()) if proto.is_connected())
