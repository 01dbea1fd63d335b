"""The usage ledger: one row per finished request, written in batches, and its queries.

``LedgerWriter.add(row)`` costs the request path a list append: rows are handed to the
database's writer thread every ``batch_seconds`` (0.5 s) or ``batch_rows`` (200), whichever
comes first, as one transaction. The writer also keeps today's and this month's spend in
memory (``spent``), so a budget check at admission reads no database.

The query functions take a ``sqlite3.Connection`` (the CLI's own, or the reader thread's via
``Database.read``); times are UTC epochs, the zone is only for grouping by local day.
"""

from __future__ import annotations

import asyncio
import csv
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import tzinfo
from functools import partial
from operator import attrgetter
from typing import Literal, TextIO

from gateway.isotime import iso_utc
from gateway.ledger.budget import Budgets, Refusal, WarnedState, check, warnings
from gateway.ledger.db import Database, Job
from gateway.ledger.period import (
    day_start,
    local_date,
    month_start,
    next_day_start,
    next_month_start,
)
from gateway.observe import get_logger

log = get_logger("gateway.ledger")

GroupBy = Literal["model", "provider", "day"]
NONE_KEY = "-"  # the group of rows with no served model / provider (failed requests)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One finished request (SPEC §11). Token counts and times are None when unknown."""

    ts: float  # UTC epoch seconds of the request's arrival
    request_id: str
    dialect: str  # "chat" | "responses" | "messages" …
    requested: str | None  # the model the client asked for (alias / ref / chain name)
    served: str | None  # the ref that answered; None when nothing did
    provider: str | None  # x-inference-provider of the answer
    attempts: str  # the x-coderclaw-attempts header value
    outcome: str  # "ok", "length", "failed", "client_gone", "budget_exceeded", …
    ttft_ms: float | None = None
    total_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None

    @property
    def time(self) -> str:
        """ISO 8601 UTC with milliseconds, ``2026-12-01T19:22:10.123Z``."""
        return iso_utc(self.ts)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UsageRow))
CSV_COLUMNS: tuple[str, ...] = ("time", *COLUMNS)


_INSERT = (
    f"INSERT INTO usage (time, {', '.join(COLUMNS)}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)


_values = attrgetter(*COLUMNS)  # a row's values in column order (astuple copies deeply: slow)


def insert_rows(conn: sqlite3.Connection, rows: Iterable[UsageRow]) -> None:
    conn.executemany(_INSERT, ((iso_utc(r.ts), *_values(r)) for r in rows))


def prune_usage(conn: sqlite3.Connection, before: float) -> int:
    """Delete rows older than ``before``; how many went."""
    return conn.execute("DELETE FROM usage WHERE ts < ?", (before,)).rowcount


@dataclass(frozen=True, slots=True)
class Total:
    """One group of ``totals``: ``cost_usd`` None when any of its rows has no price."""

    key: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None

    def as_json(self, *, with_key: bool = True) -> dict[str, object]:
        data: dict[str, object] = {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }
        return {"key": self.key, **data} if with_key else data


_GROUP_COLUMN = {"model": "served", "provider": "provider"}


def totals(
    conn: sqlite3.Connection, since: float, until: float, by: GroupBy, tz: tzinfo
) -> list[Total]:
    """Rows with ``since <= ts < until`` summed per served model, provider or local day.

    Models and providers come most requests first (then by key); days in date order. Rows with
    no served model / provider form the group ``"-"``.
    """
    if by == "day":
        return _totals_by_day(conn, since, until, tz)
    column = _GROUP_COLUMN[by]
    cursor = conn.execute(
        f"""SELECT COALESCE({column}, ?), COUNT(*), COALESCE(SUM(input_tokens), 0),
                   COALESCE(SUM(output_tokens), 0), COUNT(cost_usd), COALESCE(SUM(cost_usd), 0)
            FROM usage WHERE ts >= ? AND ts < ? GROUP BY 1""",
        (NONE_KEY, since, until),
    )
    groups = [
        Total(key, n, tokens_in, tokens_out, cost if priced == n else None)
        for key, n, tokens_in, tokens_out, priced, cost in cursor
    ]
    return sorted(groups, key=lambda t: (-t.requests, t.key))


def _totals_by_day(conn: sqlite3.Connection, since: float, until: float, tz: tzinfo) -> list[Total]:
    # Local days are not fixed-length in UTC (DST), so the grouping is done here.
    sums: dict[str, list[float]] = {}
    unpriced: set[str] = set()
    cursor = conn.execute(
        "SELECT ts, input_tokens, output_tokens, cost_usd FROM usage WHERE ts >= ? AND ts < ?",
        (since, until),
    )
    day_lo = day_hi = 0.0
    key = ""
    for ts, tokens_in, tokens_out, cost in cursor:
        if not day_lo <= ts < day_hi:
            key = local_date(ts, tz).isoformat()
            day_lo, day_hi = day_start(ts, tz).timestamp(), next_day_start(ts, tz).timestamp()
        acc = sums.setdefault(key, [0, 0, 0, 0.0])
        acc[0] += 1
        acc[1] += tokens_in or 0
        acc[2] += tokens_out or 0
        if cost is None:
            unpriced.add(key)
        else:
            acc[3] += cost
    return [
        Total(k, int(a[0]), int(a[1]), int(a[2]), None if k in unpriced else a[3])
        for k, a in sorted(sums.items())
    ]


def total_of(groups: Iterable[Total]) -> Total:
    """The sum of ``groups`` (key ``"total"``); ``cost_usd`` None when any group's is."""
    requests = tokens_in = tokens_out = 0
    cost: float | None = 0.0
    for g in groups:
        requests += g.requests
        tokens_in += g.input_tokens
        tokens_out += g.output_tokens
        cost = None if cost is None or g.cost_usd is None else cost + g.cost_usd
    return Total("total", requests, tokens_in, tokens_out, cost)


def export_csv(conn: sqlite3.Connection, since: float, until: float, out: TextIO) -> int:
    """Every row with ``since <= ts < until`` as CSV (header first, oldest first); the count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    cursor = conn.execute(
        f"SELECT time, {', '.join(COLUMNS)} FROM usage WHERE ts >= ? AND ts < ? ORDER BY ts, id",
        (since, until),
    )
    for row in cursor:
        writer.writerow("" if v is None else v for v in row)
        count += 1
    return count


def spend(conn: sqlite3.Connection, now: float, tz: tzinfo) -> tuple[float, float]:
    """(today's, this month's) known cost in USD, local day and month of ``now`` in ``tz``."""
    day = day_start(now, tz).timestamp()
    month = month_start(now, tz).timestamp()
    today_usd, month_usd = conn.execute(
        """SELECT COALESCE(SUM(CASE WHEN ts >= ? THEN cost_usd END), 0),
                  COALESCE(SUM(cost_usd), 0)
           FROM usage WHERE ts >= ?""",
        (day, month),
    ).fetchone()
    return float(today_usd), float(month_usd)


def recent(conn: sqlite3.Connection, limit: int = 50) -> list[UsageRow]:
    """The last ``limit`` rows, newest first."""
    cursor = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM usage ORDER BY ts DESC, id DESC LIMIT ?", (limit,)
    )
    return [UsageRow(*row) for row in cursor]


class SpendCounter:
    """Today's and this month's known spend, kept in memory and rolled over at local midnight.

    Seed it with ``spend()`` at start; ``add`` each finished request's cost. A cost for an
    instant outside the current day (or month) only counts where it belongs.
    """

    def __init__(self, tz: tzinfo, now: float, today_usd: float = 0.0, month_usd: float = 0.0):
        self.tz = tz
        self._day = (0.0, 0.0)
        self._month = (0.0, 0.0)
        self._roll(now)
        self.today_usd = today_usd
        self.month_usd = month_usd

    def _roll(self, now: float) -> None:
        if not self._day[0] <= now < self._day[1]:
            self._day = (
                day_start(now, self.tz).timestamp(),
                next_day_start(now, self.tz).timestamp(),
            )
            self.today_usd = 0.0
        if not self._month[0] <= now < self._month[1]:
            self._month = (
                month_start(now, self.tz).timestamp(),
                next_month_start(now, self.tz).timestamp(),
            )
            self.month_usd = 0.0

    def add(self, ts: float, cost: float | None) -> None:
        if not cost:
            return
        if ts >= self._day[1]:
            self._roll(ts)
        if self._day[0] <= ts < self._day[1]:
            self.today_usd += cost
        if self._month[0] <= ts < self._month[1]:
            self.month_usd += cost

    def spent(self, now: float) -> tuple[float, float]:
        """(today, month) at ``now``: a new day or month starts from 0."""
        self._roll(now)
        return self.today_usd, self.month_usd


class LedgerWriter:
    """Adds usage rows without blocking: batched on the event loop, written on the DB thread.

    Registers a daily retention prune (``retention_days``) with the database.
    """

    def __init__(
        self,
        db: Database,
        *,
        tz: tzinfo,
        retention_days: float = 90,
        batch_rows: int = 200,
        batch_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._retention_s = retention_days * 86400
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._rows: list[UsageRow] = []
        self._timer: asyncio.TimerHandle | None = None
        self.spend = SpendCounter(tz, clock())
        self._warned: WarnedState = frozenset()
        db.add_maintenance(self._prune)

    async def load_spend(self, now: float) -> None:
        """Seed the in-memory spend from the ledger (once, at start)."""
        today, month = await self._db.read(partial(spend, now=now, tz=self.spend.tz))
        self.spend = SpendCounter(self.spend.tz, now, today, month)

    def add(self, row: UsageRow) -> None:
        """Queue ``row``; it reaches the database within ``batch_seconds``. Never raises."""
        self._rows.append(row)
        self.spend.add(row.ts, row.cost_usd)
        if len(self._rows) >= self._batch_rows:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script): hand it over at once
                self.flush()
                return
            self._timer = loop.call_later(self._batch_seconds, self.flush)

    def spent(self, now: float) -> tuple[float, float]:
        """(today's, this month's) spend in USD, from memory."""
        return self.spend.spent(now)

    def check_budget(self, budgets: Budgets, now: float) -> Refusal | None:
        """The admission check: a ``Refusal`` when a budget is spent, else None; no I/O.

        Logs ``budget_warning`` once per day / month when the spend reaches 80 % of a budget.
        The budgets' zone is this writer's ``tz``.
        """
        if not budgets.any:
            return None
        today, month = self.spend.spent(now)
        found, self._warned = warnings(today, month, budgets, now, self.spend.tz, self._warned)
        for w in found:
            log.warning(
                "budget_warning",
                period=w.period,
                limit_usd=w.limit_usd,
                spent_usd=round(w.spent_usd, 6),
                period_key=w.period_key,
            )
        return check(today, month, budgets, now, self.spend.tz)

    def flush(self) -> None:
        """Hand the rows added so far to the writer thread now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._rows = self._rows, []
        if rows:
            self._db.submit(Job(partial(insert_rows, rows=rows), rows=len(rows), kind="usage"))

    async def drain(self, within_s: float = 10.0) -> bool:
        """Flush and wait until the rows are written (or given up); for shutdown and tests."""
        self.flush()
        return await self._db.drain(within_s)

    def _prune(self, conn: sqlite3.Connection, now: float) -> int:
        return prune_usage(conn, now - self._retention_s)
