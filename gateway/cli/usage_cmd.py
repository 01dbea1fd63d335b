"""``coderclaw usage …``: what the ledger says was spent, and its rows as CSV."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, tzinfo
from typing import TypeVar

import click

from gateway.cli.common import echo_json, format_table
from gateway.errors import GatewayError
from gateway.ledger.period import local_date, local_zone, parse_since
from gateway.ledger.schema import DatabaseUnavailable, db_path, open_migrated
from gateway.ledger.usage import (
    CSV_COLUMNS,
    NONE_KEY,
    GroupBy,
    Total,
    export_csv,
    total_of,
    totals,
)
from gateway.settings import current_environ, current_paths, load_settings
from gateway.shared import UsageRow as SharedRow
from gateway.shared import masked_url

# The shared usage counters live 62 days (gateway.shared.keys); a longer --shared asks no more.
SHARED_MAX_DAYS = 62
SHARED_TIMEOUT_S = 2.0

T = TypeVar("T")
_SINCE_HELP = "Start of the period: 7d, 12h, 2w, today, month, or a date (2026-12-01)."


def _zone() -> tzinfo:
    """The zone of the local days: ``gateway.budget.timeZone`` (the one the budgets count
    in), else ``TZ``, else the machine's."""
    environ = current_environ()
    try:
        configured = load_settings(environ).config.gateway.budget.time_zone
    except GatewayError:  # an unusable config does not stop the ledger from being read
        configured = None
    if configured:
        return local_zone(configured)
    try:
        return local_zone(environ.get("TZ"))
    except ValueError:
        return local_zone()


def _since(text: str, now: float, tz: tzinfo) -> float:
    try:
        return parse_since(text, now, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _query(fn: Callable[[sqlite3.Connection], T], empty: T) -> T:
    """``fn`` on the ledger; ``empty`` when no ledger was written yet."""
    path = db_path(current_paths())
    if not path.exists():
        return empty
    try:
        conn = open_migrated(path)
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(
            f"{path} cannot be read: {exc}", hint="try again in a moment"
        ) from None
    try:
        return fn(conn)
    finally:
        conn.close()


def shared_groups(rows: Iterable[SharedRow], by: GroupBy) -> list[Total]:
    """The shared counters' rows (one per day, model and provider) summed like ``totals``:
    models and providers most requests first, days in date order; a cost None when any part
    had no price."""
    sums: dict[str, Total] = {}
    for row in rows:
        key = {"model": row.model, "provider": row.provider, "day": row.day}[by] or NONE_KEY
        old = sums.get(key, Total(key, 0, 0, 0, 0.0))
        cost = None if old.cost_usd is None or row.cost_usd is None else old.cost_usd + row.cost_usd
        sums[key] = Total(
            key,
            old.requests + row.requests,
            old.input_tokens + row.input_tokens,
            old.output_tokens + row.output_tokens,
            cost,
        )
    groups = list(sums.values())
    if by == "day":
        return sorted(groups, key=lambda t: t.key)
    return sorted(groups, key=lambda t: (-t.requests, t.key))


def shared_days(start: float, now: float, tz: tzinfo) -> list[str]:
    """The local days from ``start`` to ``now`` (at most the counters' lifetime, newest kept)."""
    first, last = local_date(start, tz), local_date(now, tz)
    count = min((last - first).days + 1, SHARED_MAX_DAYS)
    return [(last - timedelta(days=n)).isoformat() for n in reversed(range(max(count, 1)))]


def _shared_rows(days: list[str]) -> list[SharedRow]:
    """Every replica's usage counters of ``days`` from ``state.redis``."""
    from gateway.shared.redis_state import RedisState

    redis = load_settings(current_environ()).config.state.redis
    if redis is None:
        raise click.UsageError("--shared reads state.redis, and the config has none")

    async def read() -> list[SharedRow] | None:
        async with RedisState(
            redis.url,
            redis.key_prefix,
            timeout=max(redis.timeout_ms / 1000, SHARED_TIMEOUT_S),
            replica="usage-cli",
        ) as state:
            return await state.usage_totals(days)

    rows = asyncio.run(read())
    if rows is None:
        raise click.ClickException(
            f"Redis at {masked_url(redis.url)} did not answer: run without --shared for this "
            "replica's own ledger"
        )
    return rows


def _cost(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _row(t: Total) -> list[str]:
    return [t.key, str(t.requests), str(t.input_tokens), str(t.output_tokens), _cost(t.cost_usd)]


@click.group(invoke_without_command=True)
@click.option("--since", default="today", show_default=True, help=_SINCE_HELP)
@click.option(
    "--by",
    type=click.Choice(["model", "provider", "day"]),
    default="model",
    show_default=True,
    help="Group by the served model, the serving provider or the local day.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--shared",
    is_flag=True,
    help="Every replica's totals from state.redis (whole local days) instead of this ledger.",
)
@click.pass_context
def usage(ctx: click.Context, since: str, by: GroupBy, as_json: bool, shared: bool) -> None:
    """Requests, tokens and cost from the gateway's ledger (default: today, by model)."""
    if ctx.invoked_subcommand is not None:
        return
    tz = _zone()
    now = time.time()
    start = _since(since, now, tz)
    none: list[Total] = []
    if shared:
        days = shared_days(start, now, tz)
        groups = shared_groups(_shared_rows(days), by)
        start = datetime.fromisoformat(days[0]).replace(tzinfo=tz).timestamp()
    else:
        groups = _query(lambda conn: totals(conn, start, now, by, tz), none)
    total = total_of(groups)
    start_iso = datetime.fromtimestamp(start, tz).isoformat(timespec="seconds")
    if as_json:
        echo_json(
            {
                "since": start_iso,
                "until": datetime.fromtimestamp(now, tz).isoformat(timespec="seconds"),
                "by": by,
                "rows": [g.as_json() for g in groups],
                "total": total.as_json(with_key=False),
            }
        )
        return
    if not groups:
        click.echo(f"No requests since {start_iso}.")
        return
    headers = [by.upper(), "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST USD"]
    click.echo(format_table(headers, [*map(_row, groups), _row(total)]))
    if total.cost_usd is None:
        click.echo("\n? = includes requests without a known price (see coderclaw models list)")
    click.echo(f"\nsince {start_iso}")


@usage.command("export")
@click.option("--csv", "as_csv", is_flag=True, required=True, help="Write CSV (the one format).")
@click.option("--since", default=None, help=_SINCE_HELP + " Default: every row kept.")
def usage_export(as_csv: bool, since: str | None) -> None:
    """Every ledger row as CSV on stdout, oldest first (redirect it: > usage.csv)."""
    now = time.time()
    start = _since(since, now, _zone()) if since else 0.0
    written = _query(lambda conn: export_csv(conn, start, now + 1, sys.stdout), None)
    if written is None:  # no ledger yet: the header alone
        csv.writer(sys.stdout, lineterminator="\n").writerow(CSV_COLUMNS)
