"""``coderclaw usage …``: what the ledger says was spent, and its rows as CSV."""

from __future__ import annotations

import csv
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TypeVar

import click

from gateway.cli.common import echo_json, format_table
from gateway.errors import GatewayError
from gateway.ledger.period import local_zone, parse_since
from gateway.ledger.schema import DatabaseUnavailable, db_path, open_migrated
from gateway.ledger.usage import CSV_COLUMNS, GroupBy, Total, export_csv, total_of, totals
from gateway.settings import current_environ, current_paths, load_settings

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
@click.pass_context
def usage(ctx: click.Context, since: str, by: GroupBy, as_json: bool) -> None:
    """Requests, tokens and cost from the gateway's ledger (default: today, by model)."""
    if ctx.invoked_subcommand is not None:
        return
    tz = _zone()
    now = time.time()
    start = _since(since, now, tz)
    none: list[Total] = []
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
