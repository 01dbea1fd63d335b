"""Helpers shared by the command modules."""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.settings import Settings, load_settings


def settings_or_exit(**overrides: Any) -> Settings:
    """Load the settings; a ``ConfigError`` propagates to the root group (exit 78)."""
    settings = load_settings(**overrides)
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    return settings


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
