"""``coderclaw config …``: where the config is and whether it is valid."""

from __future__ import annotations

import click

from gateway.cli.common import echo_json, settings_or_exit
from gateway.settings import current_paths


@click.group()
def config() -> None:
    """Inspect and edit the configuration file."""


@config.command("path")
def config_path() -> None:
    """Print the config file's path (CODERCLAW_CONFIG_PATH or $STATE/coderclaw.json)."""
    click.echo(str(current_paths().config))


@config.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def config_validate(as_json: bool) -> None:
    """Check the config file; exit 78 with the reason when it is broken."""
    settings = settings_or_exit()
    fallbacks = [str(r) for r in settings.chain[1:]]
    summary = {
        "path": str(settings.paths.config),
        "exists": settings.config_exists,
        "primary": str(settings.chain[0]),
        "fallbacks": fallbacks,
        "aliases": {alias: str(ref) for alias, ref in settings.aliases.items()},
        "token": settings.token_source is not None,
    }
    if as_json:
        echo_json(summary)
        return
    if not settings.config_exists:
        click.echo(f"no config file at {settings.paths.config}: the defaults apply")
    else:
        click.echo(f"ok: {settings.paths.config}")
    click.echo(f"  primary:   {summary['primary']}")
    click.echo(f"  fallbacks: {', '.join(fallbacks) or '(none)'}")
    click.echo(f"  aliases:   {len(settings.aliases)}")
