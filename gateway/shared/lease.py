"""Budget leases (pure): how a replica admits most requests without a Redis round trip.

A lease is a slice of a period's budget that this replica has already counted as spent in
Redis (the ``ADMIT`` script adds it to the spend key atomically, so the slices of all replicas
and the spend never add up past the limit). While every limited period has lease left, a
request is admitted here, with no I/O; each answered request's cost is taken from the lease,
and only what exceeds it (a request admitted on the last of a lease) is added to Redis.

The slice asked for is ``limit / SLICES``; the script grants at most half of what is left, and
nothing when that would cover fewer than ``MIN_REQUESTS`` requests at the average cost seen:
near the limit, and before any cost is known, every admission is exact (one round trip) and
every spend is written at once, so that at most the requests in flight when the budget was
reached are served past it. A lease no admission used for ``IDLE_S`` is handed back (its rest
subtracted from the spend key), so that an idle replica does not hold budget the others need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SLICES = 64
MIN_REQUESTS = 16
IDLE_S = 2.0
COST_WEIGHT = 0.1  # the average cost: an exponentially weighted mean of the recent requests


@dataclass(slots=True)
class _Lease:
    left: int  # nano-USD this replica may still spend without asking Redis
    ttl: int  # the spend key's TTL (seconds), for handing the rest back
    used_at: float  # when an admission last drew on it (monotonic seconds)


def want(limit: int, average_cost: float | None) -> tuple[int, int]:
    """What to ask the script for, for a period with ``limit`` nano-USD (below 0: none):
    ``(slice, smallest grant worth having)``; ``(0, 0)`` asks for no lease (no limit, or no
    cost known yet: the admission is exact)."""
    if limit < 0 or average_cost is None:
        return 0, 0
    return max(limit // SLICES, 1), max(int(average_cost * MIN_REQUESTS), 1)


class Leases:
    """This replica's leases, per spend key, and the average cost of its answered requests."""

    def __init__(self, *, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.average_cost: float | None = None
        self._held: dict[str, _Lease] = {}

    def covers(self, names: Sequence[str], limits: Sequence[int], now: float) -> bool:
        """Whether every limited key has lease left (then the admission is local, and each of
        those leases counts as used ``now``)."""
        leases = []
        for name, limit in zip(names, limits, strict=True):
            if limit < 0:
                continue
            lease = self._held.get(name)
            if lease is None or lease.left <= 0:
                return False
            leases.append(lease)
        for lease in leases:
            lease.used_at = now
        return bool(leases)

    def granted(self, name: str, amount: int, ttl: int, now: float) -> None:
        """The script added ``amount`` to ``name``'s spend (a key with ``ttl``) for us."""
        if amount <= 0:
            return
        lease = self._held.setdefault(name, _Lease(0, ttl, now))
        lease.left += amount
        lease.used_at = now

    def spend(self, names: Sequence[str], amount: int) -> list[int]:
        """An answered request cost ``amount``: taken from each key's lease; returns, per key,
        what the lease did not cover (to be added to Redis)."""
        if amount >= 0:
            self.average_cost = (
                float(amount)
                if self.average_cost is None
                else self.average_cost + COST_WEIGHT * (amount - self.average_cost)
            )
        beyond = []
        for name in names:
            lease = self._held.get(name)
            covered = min(max(lease.left, 0), amount) if lease is not None else 0
            if lease is not None:
                lease.left -= covered
            beyond.append(amount - covered)
        return beyond

    def release_idle(self, now: float) -> dict[str, tuple[int, int]]:
        """The leases no admission used for ``idle_s``, handed back: ``{key: (rest, ttl)}``."""
        idle = [n for n, lease in self._held.items() if now - lease.used_at >= self.idle_s]
        return self._release(idle)

    def release_all(self) -> dict[str, tuple[int, int]]:
        """Every lease ended: handed back when the replica stops, dropped when Redis is down."""
        return self._release(list(self._held))

    def held(self) -> dict[str, int]:
        return {name: lease.left for name, lease in self._held.items()}

    def _release(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        gone = [(n, self._held.pop(n)) for n in names]
        return {n: (lease.left, lease.ttl) for n, lease in gone if lease.left > 0}
