"""Shared state across replicas (SPEC §13): ``LocalState`` by default, ``RedisState`` with
``state.redis``. The engine talks to the ``SharedState`` protocol; ``BreakerMirror`` lands the
other replicas' news in the local breaker and hedging statistics.

``redis`` is imported only when ``state.redis`` is configured (``open_state``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.shared.keys import Status, masked_url
from gateway.shared.mirror import BreakerMirror
from gateway.shared.section import RedisSection, StateSection
from gateway.shared.state import (
    Admission,
    Clock,
    Listener,
    LocalState,
    SharedState,
    SystemClock,
    UsageDelta,
    UsageRow,
)

if TYPE_CHECKING:
    from gateway.shared.redis_state import RedisState

__all__ = [
    "Admission",
    "BreakerMirror",
    "Clock",
    "Listener",
    "LocalState",
    "RedisSection",
    "SharedState",
    "StateSection",
    "Status",
    "SystemClock",
    "UsageDelta",
    "UsageRow",
    "masked_url",
    "open_state",
]


def open_state(
    section: StateSection, *, clock: Clock | None = None, replica: str | None = None
) -> SharedState:
    """The shared state the config asks for (not started: call ``start``)."""
    if section.redis is None:
        return LocalState(replica or "local")
    from gateway.shared.redis_state import RedisState

    redis: RedisState = RedisState(
        section.redis.url,
        section.redis.key_prefix,
        timeout=section.redis.timeout_ms / 1000,
        clock=clock,
        replica=replica,
    )
    return redis
