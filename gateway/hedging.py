"""Hedging before the first chunk (SPEC §9), pure: when to start the next model in parallel, and
how many requests may be hedged.

- ``HedgeStats``: each model's observed time to first chunk over its last ``window``
  observations; the adaptive delay is 1.5 * their p90, clamped to [1 s, firstTokenSeconds], and
  5 s (never more than firstTokenSeconds) until the model has 20 observations.
- ``HedgeBudget``: at most ``max_fraction`` of the requests of the last minute are hedged, with a
  floor of ``min_hedges`` per minute so a fresh gateway (one request so far) may hedge at once.
- ``hedge_delay``: the settings (``afterSeconds`` fixed / adaptive / ``false`` off,
  ``nonStream``) and a half-open probe put together: the delay for one attempt, or None.

Every ``now`` is passed in (monotonic seconds).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Literal

from gateway.refs import ModelRef

FACTOR = 1.5
FLOOR_S = 1.0
COLD_DELAY_S = 5.0
MIN_OBSERVATIONS = 20
WINDOW = 200
DEFAULT_MAX_FRACTION = 0.1
DEFAULT_MAX_MODELS = 256
BUDGET_WINDOW_S = 60.0


class _Window:
    """The last ``size`` observations, in arrival order and sorted (for the percentile)."""

    __slots__ = ("order", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def add(self, value: float) -> None:
        if len(self.order) == self.size:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(value)
        bisect.insort(self.sorted, value)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (``q`` in (0, 1]) of a non-empty window."""
        rank = max(math.ceil(q * len(self.sorted)), 1)
        return self.sorted[rank - 1]


class HedgeStats:
    """Observed times to first chunk per model ref, bounded: the last ``window`` observations of
    at most ``max_models`` refs (least recently observed dropped first; configured refs kept)."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        min_observations: int = MIN_OBSERVATIONS,
        max_models: int = DEFAULT_MAX_MODELS,
        configured: Iterable[ModelRef] = (),
    ) -> None:
        self._windows: OrderedDict[ModelRef, _Window] = OrderedDict()
        self.window = window
        self.min_observations = min_observations
        self.max_models = max_models
        self.configured: frozenset[ModelRef] = frozenset(configured)

    def observe(self, ref: ModelRef, seconds: float) -> None:
        """An attempt of ``ref`` delivered its first chunk ``seconds`` after it started.

        For a hedge's loser, cancelled without a first chunk, pass the time it had waited: a
        lower bound that keeps the slow tail in the p90 (left out, hedging would hide the slow
        attempts and shrink the delay). Never for an attempt that failed."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        win = self._windows.get(ref)
        if win is None:
            win = self._windows[ref] = _Window(self.window)
            self._evict()
        else:
            self._windows.move_to_end(ref)
        win.add(seconds)

    def count(self, ref: ModelRef) -> int:
        win = self._windows.get(ref)
        return len(win.order) if win is not None else 0

    def p90(self, ref: ModelRef) -> float | None:
        win = self._windows.get(ref)
        return win.percentile(0.9) if win is not None and win.order else None

    def delay(self, ref: ModelRef, first_token_seconds: float) -> float:
        """The adaptive hedge delay of ``ref``: 1.5 * p90 clamped to [1 s, firstTokenSeconds],
        or 5 s (at most firstTokenSeconds) before ``min_observations``."""
        p90 = self.p90(ref)
        if p90 is None or self.count(ref) < self.min_observations:
            return min(COLD_DELAY_S, first_token_seconds)
        return min(max(FACTOR * p90, FLOOR_S), first_token_seconds)

    def _evict(self) -> None:
        extra = sum(1 for r in self._windows if r not in self.configured) - self.max_models
        if extra > 0:
            for ref in [r for r in self._windows if r not in self.configured][:extra]:
                del self._windows[ref]


class HedgeBudget:
    """At most ``max_fraction`` of the requests of any minute are hedged.

    Requests and hedges are counted in one-second buckets over a sliding ``window_seconds``
    (60 s). ``allow`` grants a hedge while ``hedges < max(min_hedges, max_fraction *
    requests)``, both counted over the window and the request asking included: on a fresh
    gateway the first slow request may hedge (1 < max(1, 0.1)), and under steady traffic at most
    a tenth of the requests are. ``max_fraction`` 0 turns hedging off (no floor then).
    """

    def __init__(
        self,
        max_fraction: float = DEFAULT_MAX_FRACTION,
        *,
        min_hedges: int = 1,
        window_seconds: float = BUDGET_WINDOW_S,
    ) -> None:
        self.max_fraction = max_fraction
        self.min_hedges = min_hedges
        self.window_seconds = window_seconds
        self._buckets: deque[list[int]] = deque()  # [second, requests, hedges]
        self._requests = 0
        self._hedges = 0

    def record_request(self, now: float) -> None:
        """Count one client request (call it once per request, at its start)."""
        self._bucket(now)[1] += 1
        self._requests += 1

    def allow(self, now: float) -> bool:
        """May one more request be hedged now? When True the hedge is counted."""
        self._expire(now)
        if self.max_fraction <= 0:
            return False
        if self._hedges >= max(self.min_hedges, self.max_fraction * self._requests):
            return False
        self._bucket(now)[2] += 1
        self._hedges += 1
        return True

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, hedges) in the window ending at ``now``."""
        self._expire(now)
        return self._requests, self._hedges

    def _bucket(self, now: float) -> list[int]:
        self._expire(now)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def _expire(self, now: float) -> None:
        oldest = math.floor(now) - self.window_seconds
        while self._buckets and self._buckets[0][0] <= oldest:
            _, requests, hedges = self._buckets.popleft()
            self._requests -= requests
            self._hedges -= hedges


def hedge_delay(
    stats: HedgeStats,
    ref: ModelRef,
    *,
    first_token_seconds: float,
    after_seconds: float | Literal[False] | None,
    non_stream: bool,
    stream: bool,
    probe: bool = False,
) -> float | None:
    """Seconds after which an attempt of ``ref`` without a first chunk is hedged, or None for
    never.

    ``after_seconds`` False is off for everything, probes included (the user asked for never two
    upstream requests at once). Otherwise a half-open probe is always hedged, streamed or not;
    other attempts when they are streams, or with ``non_stream``. The delay is ``after_seconds``
    when set (at most firstTokenSeconds: later the first-token timeout has already moved on),
    else the adaptive one of ``stats``. Whether a next model exists, and the budget (which does
    not apply to probes), are the engine's to check.
    """
    if after_seconds is False:
        return None
    if not (probe or stream or non_stream):
        return None
    if after_seconds is None:
        return stats.delay(ref, first_token_seconds)
    return min(after_seconds, first_token_seconds)
