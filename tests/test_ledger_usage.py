"""The usage ledger: rows written in batches off the loop, their totals, CSV, spend, retention."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from gateway.ledger.budget import Budgets
from gateway.ledger.db import Database
from gateway.ledger.period import local_date
from gateway.ledger.schema import open_migrated
from gateway.ledger.usage import (
    CSV_COLUMNS,
    LedgerWriter,
    SpendCounter,
    Total,
    UsageRow,
    export_csv,
    insert_rows,
    recent,
    spend,
    total_of,
    totals,
)
from tests.gateway_harness import eventually

BERLIN = ZoneInfo("Europe/Berlin")
MODELS = ("huggingface/deepseek-ai/DeepSeek-R1", "huggingface/Qwen/Qwen3-8B")
PROVIDERS = ("together", "novita", "fireworks-ai")


def make_rows(count: int, start: float, step: float = 60.0) -> list[UsageRow]:
    """``count`` varied rows ``step`` seconds apart: two models, three providers, failures
    (nothing served, no tokens), and fireworks-ai rows without a price."""
    rows = []
    for n in range(count):
        failed = n % 7 == 6
        provider = None if failed else PROVIDERS[n % 3]
        rows.append(
            UsageRow(
                ts=start + n * step,
                request_id=f"req-{n:05d}",
                dialect=("chat", "responses", "messages")[n % 3],
                requested="coderclaw",
                served=None if failed else MODELS[n % 2],
                provider=provider,
                attempts="a=502" if failed else f"{MODELS[n % 2]}=200",
                outcome="failed" if failed else "ok",
                ttft_ms=None if failed else 100.0 + n,
                total_ms=250.0 + n,
                input_tokens=None if failed else 100 + n,
                output_tokens=None if failed else 20 + 2 * n,
                cached_tokens=None if failed else n % 5,
                reasoning_tokens=None if failed else n % 3,
                cost_usd=None if failed or provider == "fireworks-ai" else 0.0001 * (n + 1),
            )
        )
    return rows


def expected_totals(rows: list[UsageRow], key_of: str) -> dict[str, Total]:
    """Group and sum ``rows`` by hand: what the ledger's totals must say."""
    groups: dict[str, list[UsageRow]] = {}
    for r in rows:
        groups.setdefault(getattr(r, key_of) or "-", []).append(r)
    return {
        key: Total(
            key,
            len(rs),
            sum(r.input_tokens or 0 for r in rs),
            sum(r.output_tokens or 0 for r in rs),
            None
            if any(r.cost_usd is None for r in rs)
            else sum(r.cost_usd for r in rs if r.cost_usd is not None),
        )
        for key, rs in groups.items()
    }


def assert_same_totals(found: list[Total], expected: dict[str, Total]) -> None:
    assert {t.key for t in found} == set(expected)
    for t in found:
        e = expected[t.key]
        assert (t.requests, t.input_tokens, t.output_tokens) == (
            e.requests,
            e.input_tokens,
            e.output_tokens,
        )
        assert (t.cost_usd is None) == (e.cost_usd is None)
        if e.cost_usd is not None:
            assert t.cost_usd == pytest.approx(e.cost_usd, rel=1e-9)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_migrated(tmp_path / "coderclaw.db")
    yield c
    c.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "coderclaw.db")
    await database.start()
    yield database
    await database.stop()


START = datetime(2026, 11, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("by", ["served", "provider"])
def test_totals_by_model_and_provider_sum_the_rows_exactly(
    conn: sqlite3.Connection, by: str
) -> None:
    """Every group's requests and tokens are the rows' sums; a group with any unpriced row
    (fireworks-ai, or a failure) has cost None, the others the sum of their costs."""
    rows = make_rows(60, START)
    insert_rows(conn, rows)
    found = totals(conn, START, START + 86400, "model" if by == "served" else "provider", UTC)
    assert_same_totals(found, expected_totals(rows, by))
    assert [t.requests for t in found] == sorted((t.requests for t in found), reverse=True)
    assert {t.key for t in found if t.cost_usd is None} >= {"-"}
    if by == "provider":  # together and novita rows are all priced
        assert {t.key for t in found if t.cost_usd is not None} == {"together", "novita"}


def test_totals_keep_to_the_period_and_the_total_sums_the_groups(
    conn: sqlite3.Connection,
) -> None:
    rows = make_rows(100, START)
    insert_rows(conn, rows)
    since, until = START + 10 * 60, START + 50 * 60  # rows 10..49
    found = totals(conn, since, until, "model", UTC)
    inside = [r for r in rows if since <= r.ts < until]
    assert_same_totals(found, expected_totals(inside, "served"))
    total = total_of(found)
    assert total.requests == 40
    assert total.input_tokens == sum(r.input_tokens or 0 for r in inside)
    assert total.cost_usd is None  # some rows have no price


def test_total_of_priced_groups_is_their_sum_and_of_none_is_zero() -> None:
    groups = [Total("a", 1, 10, 5, 0.25), Total("b", 2, 20, 6, 0.5)]
    assert total_of(groups) == Total("total", 3, 30, 11, 0.75)
    assert total_of([]) == Total("total", 0, 0, 0, 0.0)


def test_totals_by_day_group_by_the_local_calendar_day(conn: sqlite3.Connection) -> None:
    """Rows around Berlin's midnight land on Berlin's dates, not UTC's; 23 h DST day too."""
    base = datetime(2026, 3, 28, 22, tzinfo=UTC).timestamp()  # 23:00 in Berlin, before DST
    rows = make_rows(30, base, step=1800)  # 15 hours: one local midnight
    insert_rows(conn, rows)
    found = totals(conn, base, base + 86400, "day", BERLIN)
    by_day: dict[str, list[UsageRow]] = {}
    for r in rows:
        by_day.setdefault(local_date(r.ts, BERLIN).isoformat(), []).append(r)
    assert [t.key for t in found] == ["2026-03-28", "2026-03-29"]
    assert [t.requests for t in found] == [len(by_day["2026-03-28"]), len(by_day["2026-03-29"])]
    assert found[0].requests == 2  # 23:00 and 23:30 local
    assert sum(t.output_tokens for t in found) == sum(r.output_tokens or 0 for r in rows)


def test_export_csv_writes_every_field_of_every_row_in_order(conn: sqlite3.Connection) -> None:
    rows = make_rows(25, START)
    insert_rows(conn, rows)
    out = io.StringIO()
    assert export_csv(conn, START, START + 86400, out) == 25
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(parsed[0]) == list(CSV_COLUMNS)
    for r, line in zip(rows, parsed, strict=True):
        assert line["request_id"] == r.request_id
        assert line["time"] == r.time and line["time"].endswith("Z")
        assert float(line["ts"]) == r.ts
        assert line["served"] == (r.served or "")
        assert line["cost_usd"] == ("" if r.cost_usd is None else repr(r.cost_usd))
        assert line["input_tokens"] == ("" if r.input_tokens is None else str(r.input_tokens))


def test_spend_is_the_known_cost_of_the_local_day_and_month(conn: sqlite3.Connection) -> None:
    def row(ts: float, cost: float | None) -> UsageRow:
        return UsageRow(ts, "r", "chat", "m", "m", "p", "m=200", "ok", cost_usd=cost)

    now = datetime(2026, 12, 1, 14, tzinfo=UTC).timestamp()  # 15:00 in Berlin
    insert_rows(
        conn,
        [
            row(now - 3600, 0.5),  # today
            row(now - 14 * 3600 - 60, 0.25),  # 2026-12-01T00:59 Berlin: today
            row(now - 15 * 3600 - 60, 2.0),  # 2026-11-30T23:59 Berlin: last month
            row(now - 60, None),  # unpriced: not counted
        ],
    )
    assert spend(conn, now, BERLIN) == (0.75, 0.75)
    assert spend(conn, now, UTC) == (0.5, 0.5)  # in UTC the other two are on Nov 30


def test_recent_gives_the_newest_rows_first_whole(conn: sqlite3.Connection) -> None:
    rows = make_rows(80, START)
    insert_rows(conn, rows)
    assert recent(conn, 50) == rows[::-1][:50]


def test_spend_counter_adds_costs_and_starts_again_at_local_midnight() -> None:
    now = 1_796_132_400.0  # 2026-12-01 15:00 Berlin
    counter = SpendCounter(BERLIN, now, today_usd=1.0, month_usd=3.0)
    counter.add(now, 0.5)
    counter.add(now, None)
    assert counter.spent(now) == (1.5, 3.5)
    tomorrow = now + 10 * 3600  # 01:00 on Dec 2
    assert counter.spent(tomorrow) == (0.0, 3.5)
    counter.add(tomorrow, 0.25)
    assert counter.spent(tomorrow) == (0.25, 3.75)
    assert counter.spent(now + 31 * 86400) == (0.0, 0.0)  # January


async def test_rows_added_reach_the_database_within_the_batch_interval(db: Database) -> None:
    """``add`` only queues; without any flush the rows are in the file within ~0.5 s."""
    ledger = LedgerWriter(db, tz=UTC)
    rows = make_rows(30, time.time() - 3600)
    started = time.perf_counter()
    for r in rows:
        ledger.add(r)
    assert time.perf_counter() - started < 0.05
    reader = sqlite3.connect(db.path)

    def stored() -> int:
        return int(reader.execute("SELECT COUNT(*) FROM usage").fetchone()[0])

    assert stored() == 0  # still batched
    await eventually(lambda: stored() == 30, timeout=3)
    reader.close()
    assert await db.read(lambda c: recent(c, 100)) == rows[::-1]


async def test_a_full_batch_is_handed_over_at_once(db: Database) -> None:
    """200 rows need no timer: the batch goes to the writer at the 200th row."""
    ledger = LedgerWriter(db, tz=UTC, batch_seconds=3600)
    for r in make_rows(200, time.time() - 3600):
        ledger.add(r)
    assert await db.drain()
    assert await db.read(lambda c: c.execute("SELECT COUNT(*) FROM usage").fetchone()[0]) == 200


async def test_ledger_spend_counts_rows_as_they_are_added_and_loads_from_the_file(
    db: Database,
) -> None:
    now = time.time()
    ledger = LedgerWriter(db, tz=UTC)
    ledger.add(UsageRow(now, "a", "chat", "m", "m", "p", "m=200", "ok", cost_usd=0.02))
    assert ledger.spent(now) == (0.02, 0.02)
    assert await ledger.drain()
    again = LedgerWriter(db, tz=UTC)
    await again.load_spend(now)
    assert again.spent(now) == (0.02, 0.02)


async def test_retention_prunes_old_rows_at_start_and_once_a_day(tmp_path: Path) -> None:
    """Rows older than retentionDays go at open; a day later the next old ones go too."""
    path = tmp_path / "coderclaw.db"
    now = [datetime(2026, 12, 1, 14, tzinfo=UTC).timestamp()]
    conn = open_migrated(path)
    insert_rows(conn, make_rows(3, now[0] - 91 * 86400))  # past 90 days
    insert_rows(conn, make_rows(2, now[0] - 89.5 * 86400, step=1))  # 89.5 days old
    insert_rows(conn, make_rows(4, now[0] - 3600))
    conn.close()

    def count() -> int:
        with sqlite3.connect(path) as c:
            return int(c.execute("SELECT COUNT(*) FROM usage").fetchone()[0])

    db = Database(path, clock=lambda: now[0])
    LedgerWriter(db, tz=UTC, retention_days=90, clock=lambda: now[0])
    await db.start()
    try:
        await db.drain()
        assert count() == 6
        now[0] += 12 * 3600  # half a day later: no prune yet
        await db.drain()
        assert count() == 6
        now[0] += 13 * 3600  # a day after the first prune: the 89.5-day-old rows are past 90
        await db.drain()
        assert count() == 4
    finally:
        await db.stop()


async def test_budget_check_refuses_when_spent_warns_once_at_80_percent_and_resets_next_day(
    db: Database,
) -> None:
    """A daily budget of $0.01: at 85 % one ``budget_warning`` (not one per request); at
    $0.01 a refusal naming the next local midnight; the next day requests flow again."""
    now = datetime(2026, 12, 1, 14, tzinfo=UTC).timestamp()
    ledger = LedgerWriter(db, tz=BERLIN, clock=lambda: now)
    budgets = Budgets(daily_usd=0.01)
    with capture_logs() as logs:
        assert ledger.check_budget(budgets, now) is None
        ledger.add(UsageRow(now, "a", "chat", "m", "m", "p", "m=200", "ok", cost_usd=0.0085))
        assert ledger.check_budget(budgets, now + 1) is None
        assert ledger.check_budget(budgets, now + 2) is None
        ledger.add(UsageRow(now + 3, "b", "chat", "m", "m", "p", "m=200", "ok", cost_usd=0.0015))
        refusal = ledger.check_budget(budgets, now + 4)
    assert refusal is not None and refusal.period == "daily"
    assert refusal.resets_at == datetime(2026, 12, 2, tzinfo=BERLIN)
    assert [e["event"] for e in logs] == ["budget_warning"]
    assert logs[0]["period"] == "daily" and logs[0]["limit_usd"] == 0.01
    tomorrow = datetime(2026, 12, 2, 0, 0, 1, tzinfo=BERLIN).timestamp()
    assert ledger.check_budget(budgets, tomorrow) is None
    assert ledger.check_budget(Budgets(), now) is None
    await ledger.drain()


def test_unknown_values_are_stored_as_sql_null(conn: sqlite3.Connection) -> None:
    """None binds NULL (through the module's adapter for None), and reads back as None."""
    row = UsageRow(START, "r-null", "chat", None, None, None, "", "failed")
    insert_rows(conn, [row])
    types = conn.execute(
        "SELECT typeof(requested), typeof(served), typeof(provider), typeof(ttft_ms), "
        "typeof(cost_usd), typeof(outcome) FROM usage WHERE request_id = 'r-null'"
    ).fetchone()
    assert types == ("null", "null", "null", "null", "null", "text")
    assert conn.execute("SELECT COUNT(*) FROM usage WHERE cost_usd IS NULL").fetchone() == (1,)
