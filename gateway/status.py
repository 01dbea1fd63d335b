"""What the status page and ``coderclaw status`` show (pure): the ``/status.json`` document.

The server gathers the parts (the chain's states, the catalog, the recent requests, the spend)
and ``build_status`` shapes them as SPEC §11 says. Times: ``recent[].time`` and
``chain[].until`` are UTC epoch seconds; ``chain[].left_s`` is the seconds until ``until`` as
the gateway counts them (a browser's clock may differ from the gateway's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.ledger.budget import Budgets
from gateway.ledger.usage import UsageRow
from gateway.refs import ModelRef

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class ChainState:
    """One chain model as the breaker sees it."""

    ref: ModelRef
    state: State
    reason: str | None = None
    left_s: float | None = None  # seconds until it may be tried again (open only)


def breaker_state(
    ref: ModelRef, state: str, reason: str, until: float | None, now: float, recent: str | None
) -> ChainState:
    """One chain model from ``Breaker.describe`` (monotonic ``now``): its state, why it is not
    closed (the breaker's reason, else the newest failure the recent requests saw), and the
    seconds until an open model may be probed again."""
    if state == "closed":
        return ChainState(ref, "closed")
    left = until - now if state == "open" and until is not None else None
    return ChainState(ref, "open" if state == "open" else "half_open", reason or recent, left)


def last_failure(recent: Iterable[UsageRow], ref: ModelRef) -> str | None:
    """What the newest failed attempt on ``ref`` among ``recent`` (oldest first) ended with,
    as a reason (``"503 on the last attempt"``); None when none failed."""
    name = str(ref)
    for row in reversed(list(recent)):
        for label in reversed(row.attempts.split(",")):
            model, _, outcome = label.rpartition("=")
            if model == name and outcome != "200":
                return f"{outcome} on the last attempt"
    return None


def recent_json(row: UsageRow) -> dict[str, Any]:
    return {
        "time": row.ts,
        "request_id": row.request_id,
        "dialect": row.dialect,
        "requested": row.requested,
        "served": row.served,
        "provider": row.provider,
        "attempts": row.attempts,
        "ttft_ms": row.ttft_ms,
        "total_ms": row.total_ms,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": row.cost_usd,
        "outcome": row.outcome,
    }


def build_status(
    *,
    version: str,
    uptime_s: float,
    listen: str,
    now: float,
    chain: Sequence[ChainState],
    catalog_models: int,
    catalog_age_s: float | None,
    catalog_error: str | None,
    recent: Sequence[UsageRow],
    spent: tuple[float, float],
    budgets: Budgets,
    shared_state: str = "local",
    replica: str = "local",
) -> dict[str, Any]:
    """The ``/status.json`` document; ``now`` is the wall clock, ``recent`` oldest first (it
    is shown newest first). ``shared_state`` is ``redis``, ``degraded`` or ``local`` (SPEC §13)
    and ``replica`` this replica's name."""
    return {
        "version": version,
        "uptime_s": round(uptime_s, 1),
        "listen": listen,
        "replica": replica,
        "shared_state": shared_state,
        "chain": [
            {
                "ref": str(c.ref),
                "state": c.state,
                "reason": c.reason,
                "until": None if c.left_s is None else round(now + c.left_s, 3),
                "left_s": None if c.left_s is None else round(c.left_s, 1),
            }
            for c in chain
        ],
        "catalog": {
            "models": catalog_models,
            "age_s": None if catalog_age_s is None else round(catalog_age_s, 1),
            "last_error": catalog_error,
        },
        "recent": [recent_json(r) for r in reversed(recent)],
        "spend": {
            "today_usd": round(spent[0], 10),
            "month_usd": round(spent[1], 10),
            "daily_budget_usd": budgets.daily_usd,
            "monthly_budget_usd": budgets.monthly_usd,
        },
    }
