"""``SharedBudget``: the budgets and usage counters of ``RedisState`` (SPEC §13).

``try_spend`` (admission) answers from this replica's lease while it lasts, else with one
script that may grant a new lease (``gateway.shared.lease``); ``record_spend`` (after the
answer) takes the cost from the lease and buffers the rest with the usage counters; the flush
task writes them every ``flush_seconds`` in one transaction with their TTLs, and at once when a
spend on a key with a limit went beyond the lease. While Redis is down (``Down`` from the
state's bounded call) the answers come from the ``SpendBook``: the last shared spend known plus
this replica's since, written when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.clock import Clock
from gateway.observe import get_logger
from gateway.shared import keys as k
from gateway.shared import lease
from gateway.shared.lease import Leases
from gateway.shared.spend import SpendBook, limit_nano, usage_fields, usage_rows
from gateway.shared.state import Admission, Source, UsageDelta, UsageRow

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = get_logger("gateway.shared")

T = TypeVar("T")

FLUSH_S = 0.1


class Down(Exception):
    """Redis did not answer this call: give the local answer."""


Call = Callable[[str, Callable[["Redis"], Awaitable[Any]]], Awaitable[Any]]


class SharedBudget:
    """The spend and usage of one replica in the Redis of its ``RedisState``: ``call`` runs one
    bounded operation on the connected client (``Down`` when it cannot), ``joined`` says
    whether the state is connected, ``script`` is the registered ``ADMIT`` (None while
    down)."""

    def __init__(
        self,
        prefix: str,
        replica: str,
        clock: Clock,
        call: Call,
        joined: Callable[[], bool],
        *,
        flush_seconds: float = FLUSH_S,
        lease_idle_s: float = lease.IDLE_S,
    ) -> None:
        self.prefix = prefix
        self.replica = replica
        self.script: AsyncScript | None = None
        self._clock = clock
        self._call = call
        self._joined = joined
        self._flush_seconds = flush_seconds
        # The last shared spend known and what this replica has yet to write (all of it while
        # Redis is down), its leases, the spend keys that have a limit, and the flush's
        # wake-up and waiters.
        self._book = SpendBook()
        self._leases = Leases(idle_s=lease_idle_s)
        self._limited: set[str] = set()
        self._flush_wanted = asyncio.Event()
        self._flush_waiters: list[asyncio.Future[bool]] = []
        self.closed = False

    async def try_spend(
        self, period_keys: Mapping[str, str], limits_usd: Mapping[str, float | None]
    ) -> Admission:
        """Admission: the shared spend of each period (``{"daily": "2026-12-01", "monthly":
        "2026-12"}``) against its limit (``{"daily": 10.0, "monthly": None}``), the first
        period in the given order whose spend reached it named in ``exceeded``. At once from
        this replica's lease while it lasts (``source`` ``lease``); else one round trip, which
        may grant a new lease; while degraded, the estimate from the last known shared spend."""
        periods = list(period_keys)
        names = [k.spend_key(self.prefix, p, key) for p, key in period_keys.items()]
        limits = [limit_nano(limits_usd.get(p)) for p in periods]
        self._limited = {n for n, limit in zip(names, limits, strict=True) if limit >= 0}
        now = self._clock.monotonic()
        if self._joined() and self._leases.covers(names, limits, now):
            _, spends = self._book.estimate(names, limits)
            return _admission(periods, None, spends, "lease")
        wants = [lease.want(limit, self._leases.average_cost) for limit in limits]
        ttls = [k.period_ttl(p) for p in periods]
        unwritten = [self._book.unwritten(name) for name in names]
        args = [*limits, *(w for w, _ in wants), *(m for _, m in wants), *ttls, *unwritten]
        try:
            script = self.script
            if script is None:
                raise Down
            out = await self._call("try_spend", lambda c: script(keys=names, args=args, client=c))
        except Down:
            first, spends = self._book.estimate(names, limits)
            return _admission(periods, None if first is None else first + 1, spends, "estimate")
        n = len(names)
        index, spends, grants = int(out[0]), [int(s) for s in out[1 : n + 1]], out[n + 1 :]
        for name, spent, grant, ttl in zip(names, spends, grants, ttls, strict=True):
            self._book.remember(name, spent)
            self._leases.granted(name, int(grant), ttl, now)
        return _admission(periods, index or None, spends, "redis")

    def record_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> None:
        """After an answer: its cost to every period's shared spend and its tokens to the usage
        counters of ``day`` (default ``period_keys["daily"]``), with the next flush. No I/O:
        the cost comes out of the lease first, and what it did not cover on a key with a limit
        is flushed at once (the other replicas' admissions need it); the rest within
        ``flush_seconds``, in one round trip for every request meanwhile."""
        amount = k.to_nano(usage.cost_usd) if usage.cost_usd is not None else 0
        names = [k.spend_key(self.prefix, p, key) for p, key in period_keys.items()]
        ttls = [k.period_ttl(p) for p in period_keys]
        beyond = self._leases.spend(names, amount)
        usage_day = day or period_keys.get("daily")
        usage_key = k.usage_key(self.prefix, usage_day) if usage_day else None
        self._book.keep(names, ttls, beyond, usage_key, usage_fields(usage))
        if any(b > 0 and n in self._limited for n, b in zip(names, beyond, strict=True)):
            self._flush_wanted.set()

    async def add_spend(
        self, period_keys: Mapping[str, str], usage: UsageDelta, *, day: str | None = None
    ) -> Mapping[str, float] | None:
        """``record_spend``, then wait for the flush that writes it: each period's shared
        spend after it (leases granted included), or None when Redis did not take it (it is
        kept and written when Redis is back)."""
        self.record_spend(period_keys, usage, day=day)
        if not self._joined():
            return None
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(written)
        self._flush_wanted.set()
        if not await written:
            return None
        return {
            p: k.from_nano(self._book.known(k.spend_key(self.prefix, p, key)))
            for p, key in period_keys.items()
        }

    async def flush(self) -> bool:
        """One flush now (the flush task calls it; tests may too): the leases no admission
        used for a while handed back, then everything pending written in one transaction.
        True when it was written (or nothing was pending)."""
        self._give_back(self._leases.release_idle(self._clock.monotonic()))
        waiters, self._flush_waiters = self._flush_waiters, []
        try:
            await self._call("flush_spend", self.write_pending)
            written = True
        except Down:
            written = False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(written)
        return written

    async def usage_totals(self, days: Sequence[str]) -> list[UsageRow] | None:
        """The shared usage counters of ``days`` (``2026-12-01``…), one row per day, model and
        provider; None when Redis does not answer (read the local ledger instead)."""

        async def op(client: Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(k.usage_key(self.prefix, day))
                return list(await pipe.execute())

        try:
            hashes = await self._call("usage_totals", op)
        except Down:
            return None
        return [row for day, raw in zip(days, hashes, strict=True) for row in usage_rows(day, raw)]

    async def write_pending(self, client: Redis) -> None:
        """Write the spend and usage pending, in one transaction, and remember each spend key's
        new total."""
        pending = self._book.take_pending()
        if not pending:
            return
        try:
            async with client.pipeline(transaction=True) as pipe:
                for name, (nano, ttl) in pending.spend.items():
                    pipe.incrby(name, nano)
                    pipe.expire(name, ttl)
                for name, counters in pending.usage.items():
                    for field, delta in counters.items():
                        pipe.hincrby(name, field, delta)
                    pipe.expire(name, k.USAGE_TTL_S)
                results = await pipe.execute()
        except BaseException:
            self._book.put_back(pending)
            raise
        self._book.written(pending, [int(results[2 * i]) for i in range(len(pending.spend))])
        if self._book.dropped:
            log.warning("shared_usage_dropped", counters=self._book.dropped, replica=self.replica)
            self._book.dropped = 0

    def _give_back(self, rest: Mapping[str, tuple[int, int]]) -> None:
        """Leases handed back: their rest subtracted from the spend keys with the next flush."""
        for name, (left, ttl) in rest.items():
            self._book.keep([name], [ttl], [-left], None, [])

    async def flush_loop(self) -> None:
        """Every ``flush_seconds``, or at once when asked: ``flush``."""
        while not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._flush_wanted.wait()
            self._flush_wanted.clear()
            await self.flush()

    def down(self) -> None:
        """Redis is gone: no script, and the leases dropped, their rest left counted as spent.
        Handing it back would be wrong when Redis comes back without its data (a restart
        without persistence): it would subtract slices that Redis no longer holds, and the
        shared spend would go below what was spent. An outage costs each replica at most its
        lease's rest (1/64 of the budget), on the safe side."""
        self.script = None
        self._leases.release_all()

    async def close(self) -> None:
        """Hand the leases back and write what is pending (bounded by the state's timeout)."""
        self._give_back(self._leases.release_all())
        with contextlib.suppress(Down):
            await self._call("flush_spend", self.write_pending)
        self.closed = True


def _admission(
    periods: Sequence[str], index: int | None, spends: Sequence[int], source: Source
) -> Admission:
    return Admission(
        periods[index - 1] if index else None,
        {p: k.from_nano(s) for p, s in zip(periods, spends, strict=True)},
        source,
    )
