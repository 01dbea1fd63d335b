"""``coderclaw connect codex|claude [--write]``: point a coding agent at this gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import click

from gateway import connect
from gateway.cli.common import settings_or_exit
from gateway.settings import Settings


def _target(settings: Settings) -> connect.Target:
    return connect.Target(
        host=settings.host, port=settings.port, token_required=settings.gateway_token is not None
    )


def _note(text: str) -> None:
    click.echo(text, err=True)


def _report(written: connect.Written, what: str) -> None:
    if not written.changed:
        click.echo(f"{written.path} already points {what} at the gateway; nothing changed")
        return
    click.echo(f"wrote {written.path}")
    if written.backup is not None:
        click.echo(f"  previous version kept as {written.backup}")


def _merge_into(path: Path, merge: Callable[[str | None], str], what: str) -> None:
    """Write ``merge`` of the file's text (None: no file yet) to ``path``, the previous version
    kept as a backup, and say what happened."""
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    _report(connect.write_with_backup(path, merge(existing), now=datetime.now(UTC)), what)


@click.group("connect")
def connect_group() -> None:
    """Print (or --write) the settings that point a coding agent at this gateway.

    The gateway token is never written into the agent's files: the agent reads it from
    CODERCLAW_GATEWAY_TOKEN when it runs.
    """


@connect_group.command("codex")
@click.option("--write", is_flag=True, help="Merge into $CODEX_HOME/config.toml (backup kept).")
def codex(write: bool) -> None:
    """Codex CLI: a model provider for the gateway's Responses API, selected by default."""
    settings = settings_or_exit()
    target = _target(settings)
    path = connect.codex_config_path(settings.env, settings.paths.home)
    if write:
        _merge_into(path, partial(connect.merge_codex, target=target, file=str(path)), "Codex")
    else:
        click.echo(connect.merge_codex(None, target), nl=False)
        _note(f"\nPut this in {path}, or rerun with --write to merge it in (a backup is kept).")
    if target.token_required:
        _note(
            f"Codex sends the gateway token from ${connect.TOKEN_ENV}: export it where codex runs."
        )
    _note(f"Then: codex exec 'hello'   (model {connect.CHAIN_MODEL!r} is the gateway's chain)")


@connect_group.command("claude")
@click.option(
    "--write", is_flag=True, help="Merge into $CLAUDE_CONFIG_DIR/settings.json (backup kept)."
)
def claude(write: bool) -> None:
    """Claude Code: ANTHROPIC_BASE_URL at the gateway, the token read at run time."""
    settings = settings_or_exit()
    target = _target(settings)
    path = connect.claude_settings_path(settings.env, settings.paths.home)
    if write:
        merge = partial(connect.merge_claude, target=target, file=str(path))
        _merge_into(path, merge, "Claude Code")
    else:
        click.echo(json.dumps(connect.claude_settings(target), indent=2))
        _note(f"\nMerge this into {path}, or rerun with --write (a backup is kept).")
    if target.token_required:
        _note(
            f"Claude Code gets the gateway token from ${connect.TOKEN_ENV} (apiKeyHelper): "
            "export it where claude runs."
        )
        stale = [
            name for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY") if settings.env.get(name)
        ]
        if stale:
            _note(
                f"Unset {' and '.join(stale)} there: Claude Code would send it to the gateway too."
            )
    _note(
        "Claude Code's claude-* model names are served by the chain (gateway.anthropic.modelMap)."
    )
