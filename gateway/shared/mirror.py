"""``BreakerMirror``: the other replicas' news applied to this replica's ``Breaker`` and
``HedgeStats``, through their public methods only.

- an opening: the model is open here too, until the same wall-clock end (a local opening that
  lasts longer is kept; the opening count is the larger of both, so the next local opening
  doubles from there); one whose end is already past is ignored.
- a closing: another replica's probe succeeded, so the model answers: closed here too.
- times to first chunk: observations like this replica's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.breaker import Breaker
from gateway.clock import Clock, SystemClock
from gateway.errors import RefError
from gateway.hedging import HedgeStats
from gateway.refs import ModelRef, parse_ref


class BreakerMirror:
    """A ``Listener`` for ``SharedState.start``."""

    def __init__(
        self, breaker: Breaker, stats: HedgeStats | None = None, clock: Clock | None = None
    ) -> None:
        self.breaker = breaker
        self.stats = stats
        self.clock = clock or SystemClock()

    def on_open(self, ref: str, until_wall: float, reason: str, openings: int) -> None:
        model = _ref(ref)
        now_wall, now_mono = self.clock.time(), self.clock.monotonic()
        if model is None or until_wall <= now_wall:
            return
        local_until = self.breaker.cooling_until(model, now_mono)
        if local_until is not None and local_until >= now_mono + (until_wall - now_wall):
            return
        local = [r for r in self.breaker.snapshot(now_wall, now_mono) if r["ref"] == str(model)]
        row = {
            "ref": str(model),
            "openings": max([openings, *(int(r["openings"]) for r in local)]),
            "since": now_wall,
            "until": until_wall,
            "reason": reason,
        }
        self.breaker.restore([row], now_wall, now_mono)

    def on_close(self, ref: str) -> None:
        model = _ref(ref)
        if model is not None:
            self.breaker.succeed(model, announce=False)

    def on_ttft(self, ref: str, samples: Sequence[float]) -> None:
        model = _ref(ref)
        if model is None or self.stats is None:
            return
        for seconds in samples:
            self.stats.observe(model, seconds)


def _ref(text: str) -> ModelRef | None:
    try:
        return parse_ref(text)
    except RefError:
        return None
