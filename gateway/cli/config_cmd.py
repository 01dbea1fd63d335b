"""``coderclaw config …``: where the config is, whether it is valid, and get/set/unset."""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.cli.common import echo_json, settings_or_exit
from gateway.cli.editing import edit_config, read_config_data
from gateway.config import Config
from gateway.config_edit import (
    check_not_secret,
    format_path,
    get_value,
    mask_secrets,
    parse_path,
    parse_value,
    set_value,
    unset_value,
)
from gateway.errors import GatewayError
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


# ------------------------------------------------------------------------------ editing
# PATH is dotted, with [N] for list items and ["..."] for keys with dots or slashes:
#   gateway.port   agents.defaults.model.fallbacks[0]
#   agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias


def _show(value: Any, as_json: bool) -> str:
    if isinstance(value, str) and not as_json:
        return value
    return json.dumps(
        value, ensure_ascii=False, indent=2 if isinstance(value, dict | list) else None
    )


def _defaults() -> dict[str, Any]:
    return Config().model_dump(by_alias=True, mode="json")


@config.command("get")
@click.argument("path", metavar="[PATH]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON, strings too.")
def config_get(path: str | None, as_json: bool) -> None:
    """Print the value at PATH (the whole file without one) as written (``${VAR}`` not
    substituted).

    A key the file does not set prints its default, with a note on stderr. Secrets are masked
    in any subtree (apiKey, gateway.auth.token, env.vars whose name holds TOKEN, KEY, SECRET
    or PASSWORD, and anything shaped like a Hugging Face token), with --json too.
    Example: coderclaw config get gateway.port
    """
    if path is None:
        click.echo(_show(mask_secrets(read_config_data()), as_json))
        return
    parts = parse_path(path)
    found, value = get_value(read_config_data(), parts)
    if not found:
        found, value = get_value(_defaults(), parts)
        if not found:
            raise GatewayError(
                f"{format_path(parts)} is not set and has no default",
                hint="check the spelling; keys are camelCase as in the file (e.g. gateway.port)",
            )
        click.echo(f"note: {format_path(parts)} is not in the file; this is the default", err=True)
    click.echo(_show(mask_secrets(value, parts), as_json))


@config.command("set")
@click.argument("path", metavar="PATH")
@click.argument("value", metavar="VALUE")
def config_set(path: str, value: str) -> None:
    """Set PATH to VALUE, validated first (an unknown key or a wrong type changes nothing).

    VALUE is read as JSON5 when it parses (8080, true, null, ["a", "b"], {alias: "x"}), else as
    a plain string. A literal secret anywhere in VALUE is refused and nothing is written:
    tokens belong in $STATE/.env, and the config refers to them as "${HF_TOKEN}".
    The file is rewritten as plain JSON: every key and value is kept, JSON5 comments are not.

    \b
    Examples:
      coderclaw config set gateway.port 18800
      coderclaw config set agents.defaults.model.primary huggingface/Qwen/Qwen3-8B:cheapest
      coderclaw config set 'agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias' Qwen
    """
    parts = parse_path(path)
    parsed = parse_value(value)
    check_not_secret(parts, parsed)
    edit = edit_config(lambda data: set_value(data, parts, parsed))
    state = "" if edit.changed else " (unchanged)"
    click.echo(f"{format_path(parts)} = {_show(parsed, True)}{state}")


@config.command("unset")
@click.argument("path", metavar="PATH")
def config_unset(path: str) -> None:
    """Remove PATH from the file (its default applies again), validated first.

    The file is rewritten as plain JSON: every key and value is kept, JSON5 comments are not.
    """
    parts = parse_path(path)

    def mutate(data: dict[str, Any]) -> None:
        if not unset_value(data, parts):
            raise GatewayError(
                f"{format_path(parts)} is not set in {current_paths().config}; nothing changed"
            )

    edit_config(mutate)
    click.echo(f"removed {format_path(parts)}")
