"""``coderclaw status [--json]``: what the running gateway is doing, from its ``/status.json``.

The same summary as the status page (``http://127.0.0.1:18789/``), as plain aligned tables
like ``coderclaw models list``: the chain with each model's state, the spend against the
budgets, the catalog, the last requests. Host, port and gateway token come from the settings.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from typing import Any

import click

from gateway.cli.common import echo_json, format_table, settings_or_exit
from gateway.errors import UpstreamError
from gateway.settings import Settings
from gateway.upstream import fetch, one_off_session

MAX_STATUS_BYTES = 4 * 1024 * 1024
SHOWN_REQUESTS = 10


class NotRunning(Exception):
    """The gateway does not answer (or refuses) ``/status.json``."""


def _url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/status.json"


async def _fetch(settings: Settings) -> dict[str, Any]:
    headers = {}
    if settings.gateway_token is not None:
        headers["Authorization"] = f"Bearer {settings.gateway_token.reveal()}"
    url = _url(settings)
    async with one_off_session() as session:
        try:
            async with fetch.get(session, url, headers=headers, timeout_s=5) as reply:
                body = await reply.read(MAX_STATUS_BYTES)
                status = reply.status
        except UpstreamError as exc:
            raise NotRunning(
                f"the gateway is not running on {settings.host}:{settings.port} "
                f"({exc.message}): start it with `coderclaw gateway`"
            ) from None
    if status == 401:
        raise NotRunning(
            "the gateway refused the gateway token: set the one it uses in gateway.auth.token "
            "or CODERCLAW_GATEWAY_TOKEN"
        )
    if status != 200:
        raise NotRunning(
            f"{settings.host}:{settings.port} answered /status.json with {status}: is it a "
            "CoderClaw gateway of this version?"
        )
    data = json.loads(body)
    if not isinstance(data, dict):
        raise NotRunning(f"{url} did not answer a JSON object")
    return data


def _usd(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"${value:.5f}" if 0 < value < 0.01 else f"${value:.2f}"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    s = max(0, round(value))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _header(doc: dict[str, Any]) -> str:
    """Version, address and uptime; with several replicas (SPEC §13), which one and its state."""
    header = (
        f"CoderClaw gateway {doc.get('version')} on {doc.get('listen')}, "
        f"up {_seconds(doc.get('uptime_s'))}"
    )
    shared = doc.get("shared_state")
    if shared in ("redis", "degraded"):
        say = "joined" if shared == "redis" else "degraded: on its own state until Redis answers"
        header += f"\nreplica {_dash(doc.get('replica'))}, shared state {say}"
    return header


def render(doc: dict[str, Any]) -> str:
    """The status document as the terminal shows it (pure)."""
    parts = [_header(doc)]
    chain = doc.get("chain") or []
    parts.append(
        format_table(
            ["#", "model", "state", "why", "left"],
            [
                [
                    str(i),
                    _dash(c.get("ref")),
                    _dash(c.get("state")).replace("_", "-"),
                    _dash(c.get("reason")),
                    _seconds(c.get("left_s")),
                ]
                for i, c in enumerate(chain, 1)
            ],
        )
    )
    spend = doc.get("spend") or {}
    lines = []
    for label, spent, budget in (
        ("today", spend.get("today_usd"), spend.get("daily_budget_usd")),
        ("this month", spend.get("month_usd"), spend.get("monthly_budget_usd")),
    ):
        limit = f" of {_usd(budget)} budget" if budget is not None else ""
        lines.append(f"spend {label}: {_usd(spent)}{limit}")
    parts.append("\n".join(lines))
    catalog = doc.get("catalog") or {}
    age = catalog.get("age_s")
    line = f"catalog: {_dash(catalog.get('models'))} models, " + (
        f"refreshed {_seconds(age)} ago" if age is not None else "never refreshed"
    )
    if catalog.get("last_error"):
        line += f"; last refresh failed: {catalog['last_error']}"
    parts.append(line)
    recent = (doc.get("recent") or [])[:SHOWN_REQUESTS]
    if recent:
        rows = []
        for r in recent:
            when = r.get("time")
            clock = (
                datetime.fromtimestamp(when).strftime("%H:%M:%S")
                if isinstance(when, int | float)
                else "-"
            )
            ttft = r.get("ttft_ms")
            rows.append(
                [
                    clock,
                    _dash(r.get("dialect")),
                    _dash(r.get("served")),
                    _dash(r.get("provider")),
                    "-" if ttft is None else f"{round(ttft)} ms",
                    f"{_dash(r.get('input_tokens'))}/{_dash(r.get('output_tokens'))}",
                    _usd(r.get("cost_usd")),
                    _dash(r.get("outcome")),
                ]
            )
        parts.append(
            format_table(
                ["time", "dialect", "served", "provider", "ttft", "tokens", "cost", "outcome"],
                rows,
            )
        )
    else:
        parts.append("no requests yet")
    return "\n\n".join(parts)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's /status.json.")
@click.option("--port", type=int, default=None, help="The gateway's port (default: the config's).")
def status(as_json: bool, port: int | None) -> None:
    """What the running gateway is doing: the chain's states, spend, catalog, last requests."""
    settings = settings_or_exit(port=port)
    try:
        doc = asyncio.run(_fetch(settings))
    except NotRunning as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if as_json:
        echo_json(doc)
    else:
        click.echo(render(doc))
