"""The one way the editing commands write the config: plan (validated), write, say what was lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gateway.config import parse_json5, read_config_text
from gateway.config_edit import loses_formatting
from gateway.settings import current_paths
from gateway.store import ConfigEdit, plan_config_update

REWRITE_NOTE = (
    "The config file is rewritten as plain JSON: every key and value is kept, JSON5 comments "
    "and formatting are not."
)


def edit_config(mutate: Callable[[dict[str, Any]], None]) -> ConfigEdit:
    """Apply ``mutate`` to the config file; nothing is written when it raises or the result is
    invalid (``ConfigError``, exit 78), or when nothing changed."""
    path = current_paths().config
    edit = plan_config_update(path, mutate)
    edit.commit()
    if edit.changed and loses_formatting(edit.before):
        click.echo(
            f"note: {path} was rewritten as plain JSON; its comments were not kept", err=True
        )
    return edit


def read_config_data() -> dict[str, Any]:
    """The config file's data as written (``${VAR}`` not substituted); empty when absent."""
    path = current_paths().config
    text = read_config_text(path)
    return parse_json5(text, str(path)) if text is not None else {}
