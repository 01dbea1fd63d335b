"""What the engine asks of the shared state (the ``SharedState`` protocol), the values it gets
back, and ``LocalState``: the default, one replica alone, which shares nothing.

Every method answers at once or within the Redis timeout, and none raises because of Redis:
when Redis is down the answer is the local one (what ``LocalState`` answers, or for budgets
the last shared spend known plus this replica's spend since).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from gateway.clock import Clock, SystemClock
from gateway.shared.keys import Status

__all__ = [
    "Admission",
    "Clock",
    "Lifecycle",
    "Listener",
    "LocalState",
    "SharedState",
    "Source",
    "SystemClock",
    "UsageDelta",
    "UsageRow",
]

Source = Literal["redis", "lease", "estimate", "local"]


class Listener(Protocol):
    """Where the other replicas' news lands (``BreakerMirror`` is the real one). Called on the
    event loop; must not block."""

    def on_open(self, ref: str, until_wall: float, reason: str, openings: int) -> None: ...

    def on_close(self, ref: str) -> None: ...

    def on_ttft(self, ref: str, samples: Sequence[float]) -> None: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to ``try_spend``: ``exceeded`` names the first period (in the order given)
    whose spend has reached its limit, None when the request is admitted. ``spent_usd`` is the
    spend of every period asked about. ``source`` says where it comes from: ``redis`` (the
    shared spend), ``lease`` (admitted on this replica's lease of the budget, no round trip:
    the spend known plus this replica's since), ``estimate`` (Redis is down: the last shared
    spend known plus this replica's since) or ``local`` (nothing shared: the local budget
    decides alone)."""

    exceeded: str | None
    spent_usd: Mapping[str, float] = field(default_factory=dict)
    source: Source = "local"

    @property
    def admitted(self) -> bool:
        return self.exceeded is None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """One answered request, for the shared spend and usage counters. ``cost_usd`` None is an
    unknown price: no spend is added and the request counts as ``unpriced``."""

    model: str
    provider: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    requests: int = 1


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Shared usage totals of one day, model and provider. ``cost_usd`` is None when any of its
    requests had no price (like the ledger's totals: never a made-up 0)."""

    day: str
    model: str
    provider: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


class SharedState(Protocol):
    """The state the replicas share. ``start`` once (it never raises), ``close`` at shutdown."""

    replica: str

    def status(self) -> Status: ...

    async def start(self, listener: Listener | None = None) -> None: ...

    async def close(self) -> None: ...

    async def publish_open(
        self,
        ref: str,
        until_wall: float,
        reason: str,
        *,
        openings: int = 1,
        since_wall: float | None = None,
    ) -> None: ...

    async def publish_close(self, ref: str) -> None: ...

    def observe_ttft(self, ref: str, seconds: float) -> None: ...

    def track_refs(self, refs: Sequence[str]) -> None: ...

    async def try_spend(
        self, period_keys: Mapping[str, str], limits_usd: Mapping[str, float | None]
    ) -> Admission: ...

    def record_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> None: ...

    async def add_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> Mapping[str, float] | None: ...

    async def usage_totals(self, days: Sequence[str]) -> list[UsageRow] | None: ...


class Lifecycle:
    """``start`` and ``close`` (no-ops here), and ``async with`` for the pair."""

    async def start(self, listener: Listener | None = None) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class LocalState(Lifecycle):
    """One replica alone: nothing is shared, every answer is the local modules' own (the local
    breaker, hedging statistics and ledger budget stay in charge)."""

    def __init__(self, replica: str = "local") -> None:
        self.replica = replica

    def status(self) -> Status:
        return "local"

    async def publish_open(
        self,
        ref: str,
        until_wall: float,
        reason: str,
        *,
        openings: int = 1,
        since_wall: float | None = None,
    ) -> None:
        return None

    async def publish_close(self, ref: str) -> None:
        return None

    def observe_ttft(self, ref: str, seconds: float) -> None:
        return None

    def track_refs(self, refs: Sequence[str]) -> None:
        return None

    async def try_spend(
        self, period_keys: Mapping[str, str], limits_usd: Mapping[str, float | None]
    ) -> Admission:
        return Admission(None)

    def record_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> None:
        return None

    async def add_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> Mapping[str, float] | None:
        return None

    async def usage_totals(self, days: Sequence[str]) -> list[UsageRow] | None:
        return None
