"""``coderclaw usage``: the ledger's numbers, as a real child process prints them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.ledger.db import Database
from gateway.ledger.period import local_date
from gateway.ledger.usage import CSV_COLUMNS, LedgerWriter, UsageRow
from tests.cli_helpers import child_env, run_cli
from tests.test_ledger_db import hold_lock
from tests.test_ledger_usage import expected_totals, make_rows

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


async def write_ledger(state_dir: Path, rows: list[UsageRow]) -> Path:
    """Write ``rows`` the way the gateway does: through the ledger writer."""
    db = Database(state_dir / "coderclaw.db")
    await db.start()
    ledger = LedgerWriter(db, tz=UTC)
    for row in rows:
        ledger.add(row)
    assert await ledger.drain()
    await db.stop()
    return db.path


def ten_days(now: float) -> list[UsageRow]:
    """40 rows 6 h apart, the newest 3 h ago: none within 3 h of a 7-day boundary."""
    return make_rows(40, now - 3 * HOUR - 39 * 6 * HOUR, step=6 * HOUR)


def check_json(printed: dict[str, object], rows: list[UsageRow], key_of: str) -> None:
    """Rows and total equal the hand-summed rows; cost null exactly where a row is unpriced."""
    expected = expected_totals(rows, key_of)
    got = {r["key"]: r for r in printed["rows"]}  # type: ignore[attr-defined]
    assert set(got) == set(expected)
    for key, e in expected.items():
        g = got[key]
        assert set(g) == {"key", "requests", "input_tokens", "output_tokens", "cost_usd"}
        assert (g["requests"], g["input_tokens"], g["output_tokens"]) == (
            e.requests,
            e.input_tokens,
            e.output_tokens,
        )
        if e.cost_usd is None:
            assert g["cost_usd"] is None
        else:
            assert abs(g["cost_usd"] - e.cost_usd) < 1e-12
    total = printed["total"]
    assert total == {
        "requests": len(rows),
        "input_tokens": sum(r.input_tokens or 0 for r in rows),
        "output_tokens": sum(r.output_tokens or 0 for r in rows),
        "cost_usd": None,  # failures and fireworks-ai rows have no price
    }


async def test_usage_json_by_model_provider_and_day_sums_the_ledger_rows(
    state_dir: Path, isolated_home: Path
) -> None:
    now = time.time()
    rows = ten_days(now)
    await write_ledger(state_dir, rows)
    env = child_env(isolated_home, TZ="Europe/Berlin")
    week = [r for r in rows if r.ts >= now - 7 * 86400]
    assert 0 < len(week) < len(rows)
    for by, key_of in (("model", "served"), ("provider", "provider")):
        run = await run_cli("usage", "--since", "7d", "--by", by, "--json", env=env)
        assert run.code == 0, run.text
        printed = json.loads(run.out)
        assert set(printed) == {"since", "until", "by", "rows", "total"}
        assert printed["by"] == by
        since = datetime.fromisoformat(printed["since"]).timestamp()
        assert abs(since - (now - 7 * 86400)) < 30
        check_json(printed, week, key_of)
    run = await run_cli("usage", "--since", "30d", "--by", "day", "--json", env=env)
    printed = json.loads(run.out)
    days: dict[str, int] = {}
    for r in rows:
        day = local_date(r.ts, BERLIN).isoformat()
        days[day] = days.get(day, 0) + 1
    assert [(g["key"], g["requests"]) for g in printed["rows"]] == sorted(days.items())


async def test_usage_since_a_date_starts_at_local_midnight_of_that_date(
    state_dir: Path, isolated_home: Path
) -> None:
    now = time.time()
    rows = ten_days(now)
    await write_ledger(state_dir, rows)
    day = datetime.fromtimestamp(now, BERLIN).date() - timedelta(days=3)
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=BERLIN)
    env = child_env(isolated_home, TZ="Europe/Berlin")
    run = await run_cli("usage", "--since", day.isoformat(), "--json", env=env)
    assert run.code == 0, run.text
    printed = json.loads(run.out)
    assert datetime.fromisoformat(printed["since"]) == midnight
    check_json(printed, [r for r in rows if r.ts >= midnight.timestamp()], "served")


async def test_an_unpriced_model_gives_null_not_zero_and_a_priced_one_its_sum(
    state_dir: Path, isolated_home: Path
) -> None:
    now = time.time()

    def row(n: int, served: str, cost: float | None) -> UsageRow:
        return UsageRow(
            now - 60 - n,
            f"r{n}",
            "chat",
            "coderclaw",
            served,
            "p",
            "x=200",
            "ok",
            input_tokens=1000,
            output_tokens=100,
            cost_usd=cost,
        )

    await write_ledger(
        state_dir, [row(1, "a/priced", 0.25), row(2, "a/priced", 0.5), row(3, "a/unpriced", None)]
    )
    run = await run_cli("usage", "--json", env=child_env(isolated_home))
    printed = json.loads(run.out)
    costs = {g["key"]: g["cost_usd"] for g in printed["rows"]}
    assert costs == {"a/priced": 0.75, "a/unpriced": None}
    assert printed["total"]["cost_usd"] is None
    assert '"cost_usd": null' in run.out
    table = await run_cli("usage", env=child_env(isolated_home))
    assert table.code == 0, table.text
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "MODEL",
        "REQUESTS",
        "INPUT",
        "TOKENS",
        "OUTPUT",
        "TOKENS",
        "COST",
        "USD",
    ]
    assert ["a/priced", "2", "2000", "200", "0.7500"] in [line.split() for line in lines]
    assert ["a/unpriced", "1", "1000", "100", "?"] in [line.split() for line in lines]
    assert ["total", "3", "3000", "300", "?"] in [line.split() for line in lines]
    assert "without a known price" in table.out


async def test_export_csv_prints_every_row_as_written(state_dir: Path, isolated_home: Path) -> None:
    rows = ten_days(time.time())
    await write_ledger(state_dir, rows)
    run = await run_cli("usage", "export", "--csv", env=child_env(isolated_home))
    assert run.code == 0, run.text
    parsed = list(csv.DictReader(io.StringIO(run.out)))
    assert list(parsed[0]) == list(CSV_COLUMNS)
    assert [p["request_id"] for p in parsed] == [r.request_id for r in rows]
    assert [p["cost_usd"] for p in parsed] == [
        "" if r.cost_usd is None else repr(r.cost_usd) for r in rows
    ]
    assert sum(int(p["output_tokens"] or 0) for p in parsed) == sum(
        r.output_tokens or 0 for r in rows
    )
    week = await run_cli("usage", "export", "--csv", "--since", "7d", env=child_env(isolated_home))
    assert len(list(csv.DictReader(io.StringIO(week.out)))) == len(
        [r for r in rows if r.ts >= time.time() - 7 * 86400]
    )


async def test_usage_reads_while_another_process_holds_the_write_lock(
    state_dir: Path, isolated_home: Path
) -> None:
    rows = ten_days(time.time())
    path = await write_ledger(state_dir, rows)
    locker = await asyncio.to_thread(hold_lock, path, 5)
    try:
        run = await run_cli("usage", "--since", "30d", "--json", env=child_env(isolated_home))
        assert locker.poll() is None
    finally:
        await asyncio.to_thread(locker.wait, 20)
    assert run.code == 0, run.text
    assert json.loads(run.out)["total"]["requests"] == len(rows)


async def test_usage_without_a_ledger_prints_nothing_spent_and_creates_no_file(
    isolated_home: Path,
) -> None:
    env = child_env(isolated_home)
    run = await run_cli("usage", "--json", env=env)
    assert run.code == 0, run.text
    printed = json.loads(run.out)
    assert printed["rows"] == [] and printed["total"]["requests"] == 0
    table = await run_cli("usage", env=env)
    assert "No requests since" in table.out
    export = await run_cli("usage", "export", "--csv", env=env)
    assert export.out.strip() == ",".join(CSV_COLUMNS)
    assert not (isolated_home / ".coderclaw" / "coderclaw.db").exists()


async def test_a_bad_since_is_refused_with_the_accepted_forms(isolated_home: Path) -> None:
    run = await run_cli("usage", "--since", "last tuesday", env=child_env(isolated_home))
    assert run.code == 2
    assert "7d" in run.err and "2026-12-01" in run.err
