"""``SharedLink``: the gateway's side of the shared state (SPEC §13).

It carries this replica's news to the ``SharedState``, always off the request path:

- the breaker's transitions (it is the ``Breaker``'s listener): ``publish_open`` /
  ``publish_close`` in a background task;
- each time to first chunk the engine observes: ``observe_ttft`` (a buffer, no I/O);
- each answered request (the ``RequestLog``'s hook, as it finishes, before the batched log
  line): ``record_spend`` (a buffer; the state writes it with its next flush).

The one call on the request path is ``admit``, the shared budget at admission, only when a
budget is set and Redis is configured: from this replica's lease of the budget while it lasts,
else one bounded round trip (the state's timeout).

Background tasks are bounded (``max_tasks``): past it a transition is dropped and
counted (``dropped``), never queued without end; a request never waits for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from datetime import tzinfo
from typing import Any

from gateway.clock import Clock
from gateway.engine.record import RequestRecord, usage_tokens
from gateway.ledger.budget import Budgets, Period, Refusal, period_keys
from gateway.ledger.period import next_day_start, next_month_start
from gateway.observe import get_logger
from gateway.refs import ModelRef
from gateway.shared.state import SharedState, UsageDelta

log = get_logger("gateway.shared")

MAX_TASKS = 1024
CLOSE_WAIT_S = 1.0


class SharedLink:
    """This replica's news to ``state``, and the shared budget at admission."""

    def __init__(
        self, state: SharedState, clock: Clock, tz: tzinfo, *, max_tasks: int = MAX_TASKS
    ) -> None:
        self.state = state
        self.clock = clock
        self.tz = tz
        self.max_tasks = max_tasks
        self.dropped = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def shared(self) -> bool:
        """Whether a Redis is configured (``redis`` or ``degraded``), not ``local``."""
        return self.state.status() != "local"

    # -- the breaker's listener ----------------------------------------------------------------

    def opened(self, ref: ModelRef, until: float, since: float, openings: int, reason: str) -> None:
        now_wall, now_mono = self.clock.time(), self.clock.monotonic()
        self._spawn(
            self.state.publish_open(
                str(ref),
                now_wall + (until - now_mono),
                reason,
                openings=openings,
                since_wall=now_wall - (now_mono - since),
            )
        )

    def closed(self, ref: ModelRef) -> None:
        self._spawn(self.state.publish_close(str(ref)))

    # -- the engine's hooks --------------------------------------------------------------------

    def ttft(self, ref: ModelRef, seconds: float) -> None:
        self.state.observe_ttft(str(ref), seconds)

    def finished(self, record: RequestRecord) -> None:
        """A finished request: its cost and tokens to the shared spend and usage counters (a
        request no model served adds nothing)."""
        if record.served is None:
            return
        tokens_in, tokens_out, _, _ = usage_tokens(record.usage)
        delta = UsageDelta(
            str(record.served),
            record.provider,
            input_tokens=tokens_in or 0,
            output_tokens=tokens_out or 0,
            cost_usd=record.cost,
        )
        keys = period_keys(record.ts or self.clock.time(), self.tz)
        periods = {"daily": keys["daily"], "monthly": keys["monthly"]}
        self.state.record_spend(periods, delta)

    # -- admission -----------------------------------------------------------------------------

    async def admit(self, budgets: Budgets, now: float) -> Refusal | None:
        """The refusal when the shared spend has reached a budget (the monthly one named first,
        as the local check does), else None. No I/O without a budget or a Redis."""
        if not budgets.any or not self.shared:
            return None
        limits: dict[str, float | None] = {
            "monthly": budgets.monthly_usd,
            "daily": budgets.daily_usd,
        }
        keys = period_keys(now, self.tz)
        periods = {"monthly": keys["monthly"], "daily": keys["daily"]}
        admission = await self.state.try_spend(periods, limits)
        return refusal_of(admission.exceeded, admission.spent_usd, budgets, now, self.tz)

    # -- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait a little for the transitions and spend still being sent, then cancel them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._tasks) >= self.max_tasks:
            coro.close()
            if self.dropped == 0:
                log.warning(
                    "shared_state_backlog",
                    max_tasks=self.max_tasks,
                    hint="Redis calls are not keeping up; this replica's news is dropped",
                )
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("shared_state_task_failed", error=repr(task.exception()))


def refusal_of(
    exceeded: str | None,
    spent_usd: Mapping[str, float],
    budgets: Budgets,
    now: float,
    tz: tzinfo,
) -> Refusal | None:
    """The ``Refusal`` of a shared admission that named ``exceeded`` (None: admitted)."""
    if exceeded not in ("daily", "monthly"):
        return None
    period: Period = "daily" if exceeded == "daily" else "monthly"
    limit = budgets.daily_usd if period == "daily" else budgets.monthly_usd
    resets = next_day_start(now, tz) if period == "daily" else next_month_start(now, tz)
    return Refusal(period, limit or 0.0, float(spent_usd.get(period, 0.0)), resets)
