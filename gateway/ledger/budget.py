"""Budgets (pure): is the daily or monthly spend used up, when does it reset, and the 80 % note.

``check`` answers at admission: a ``Refusal`` (429 ``budget_exceeded``, in each dialect's
shape, with ``message`` and ``resets_at``) or None. ``warnings`` answers after a request was
added to the spend: the budgets that just crossed ``WARN_FRACTION`` in a period not warned yet,
with the new warned-state to keep (a value: the caller holds it, nothing here is mutable).
Periods are local days and months in the budget's zone (``gateway.budget.timeZone``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from gateway.ledger.period import local_date, next_day_start, next_month_start

WARN_FRACTION = 0.8

Period = Literal["daily", "monthly"]


@dataclass(frozen=True, slots=True)
class Budgets:
    daily_usd: float | None = None
    monthly_usd: float | None = None

    @property
    def any(self) -> bool:
        return self.daily_usd is not None or self.monthly_usd is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A budget is spent: refuse with 429 ``budget_exceeded`` until ``resets_at``."""

    period: Period
    limit_usd: float
    spent_usd: float
    resets_at: datetime  # aware, in the budget's zone

    @property
    def config_key(self) -> str:
        return "gateway.budget.dailyUsd" if self.period == "daily" else "gateway.budget.monthlyUsd"

    @property
    def message(self) -> str:
        return (
            f"The {self.period} budget of ${self.limit_usd:g} is spent "
            f"(${self.spent_usd:.4f} so far); requests resume at "
            f"{self.resets_at.isoformat(timespec='minutes')}. "
            f"To go on now, raise {self.config_key} in the config."
        )

    def retry_after_seconds(self, now: float) -> int:
        """Whole seconds until the reset (for a ``Retry-After`` header), at least 1."""
        return max(1, int(self.resets_at.timestamp() - now + 0.999))


@dataclass(frozen=True, slots=True)
class Warning:
    """A budget crossed ``WARN_FRACTION`` of its limit in this period (log it once)."""

    period: Period
    limit_usd: float
    spent_usd: float
    period_key: str  # "2026-12-01" or "2026-12"


WarnedState = frozenset[tuple[Period, str]]


def check(
    spent_today: float, spent_month: float, budgets: Budgets, now: float, tz: tzinfo
) -> Refusal | None:
    """The refusal when a budget is used up (spent ≥ limit), else None.

    When both are used up the monthly one is named: it is the one that lasts longer.
    """
    if budgets.monthly_usd is not None and spent_month >= budgets.monthly_usd:
        return Refusal("monthly", budgets.monthly_usd, spent_month, next_month_start(now, tz))
    if budgets.daily_usd is not None and spent_today >= budgets.daily_usd:
        return Refusal("daily", budgets.daily_usd, spent_today, next_day_start(now, tz))
    return None


def period_keys(now: float, tz: tzinfo) -> dict[Period, str]:
    day = local_date(now, tz)
    return {"daily": day.isoformat(), "monthly": f"{day.year:04d}-{day.month:02d}"}


def warnings(
    spent_today: float,
    spent_month: float,
    budgets: Budgets,
    now: float,
    tz: tzinfo,
    warned: WarnedState,
) -> tuple[list[Warning], WarnedState]:
    """Budgets at or past 80 % not yet warned in this period, and the warned-state after them.

    The state keeps only the current periods' keys, so it stays small and a new day or month
    warns again.
    """
    keys = period_keys(now, tz)
    current = set(keys.items())
    kept = {w for w in warned if w in current}
    found: list[Warning] = []
    candidates: tuple[tuple[Period, float | None, float], ...] = (
        ("daily", budgets.daily_usd, spent_today),
        ("monthly", budgets.monthly_usd, spent_month),
    )
    for period, limit, spent in candidates:
        if limit is None or spent < WARN_FRACTION * limit:
            continue
        mark = (period, keys[period])
        if mark not in kept:
            kept.add(mark)
            found.append(Warning(period, limit, spent, keys[period]))
    return found, frozenset(kept)
