"""``coderclaw models …``: the merged catalog and the configured chain."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from gateway.catalog import Catalog
from gateway.cli.common import echo_json, format_table, settings_or_exit
from gateway.cli.editing import edit_config
from gateway.config import aliases_of
from gateway.config_edit import (
    add_fallback,
    alias_list,
    clear_fallbacks,
    fallbacks_of,
    remove_alias,
    remove_fallback,
    resolve_input,
    set_alias,
    set_primary,
)
from gateway.discovery import fetch_models, initial_catalog, save_cached_catalog
from gateway.errors import GatewayError
from gateway.listing import ListedModel, list_models
from gateway.refs import ModelRef, parse_ref
from gateway.settings import Settings, current_paths
from gateway.upstream import one_off_session


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the Hugging Face models and manage the default chain and aliases."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


async def _refresh(settings: Settings) -> Catalog:
    hf = settings.config.hf
    async with one_off_session() as session:
        catalog = await fetch_models(
            session, hf.base_url, settings.hf_token, hf.discovery.timeout_seconds
        )
    save_cached_catalog(settings.paths.cache_file, catalog)
    return catalog


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _row(item: ListedModel) -> list[str]:
    e = item.entry
    ctx = f"{e.context_window // 1024}k" if e and e.context_window else "-"
    price = f"{_price(e.cost_input)}/{_price(e.cost_output)}" if e else "-"
    providers = ",".join(e.live_providers) if e and e.providers else "-"
    mark = "*" if item.in_chain else ""
    return [f"{mark}{item.ref}", ", ".join(item.aliases) or "-", ctx, price, providers, item.source]


def _as_dict(item: ListedModel) -> dict[str, object]:
    e = item.entry
    return {
        "ref": str(item.ref),
        "id": item.ref.upstream_id,
        "aliases": list(item.aliases),
        "in_chain": item.in_chain,
        "source": item.source,
        "context_window": e.context_window if e else None,
        "max_output": e.max_output if e else None,
        "cost_per_million": {"input": e.cost_input, "output": e.cost_output} if e else None,
        "reasoning": e.reasoning if e else None,
        "providers": list(e.live_providers) if e else [],
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--refresh", is_flag=True, help="Ask the router now and update the cache.")
def models_list(as_json: bool, refresh: bool) -> None:
    """Show the catalog: ref, alias, context, $/M tokens in/out, providers, source."""
    settings = settings_or_exit()
    catalog = (
        asyncio.run(_refresh(settings)) if refresh else initial_catalog(settings.paths.cache_file)
    )
    configured = [parse_ref(k) for k in settings.config.agents.defaults.models]
    items = list_models(catalog, configured, settings.aliases, settings.chain)
    if as_json:
        echo_json({"origin": catalog.origin, "models": [_as_dict(i) for i in items]})
        return
    headers = ["REF", "ALIAS", "CONTEXT", "$/M IN/OUT", "PROVIDERS", "SOURCE"]
    click.echo(format_table(headers, [_row(i) for i in items]))
    click.echo(f"\n{len(items)} models ({catalog.origin} catalog); * = in the default chain")


# ------------------------------------------------------------------------------ editing
# Every edit validates the whole result before writing: a bad ref, an unknown key or a clash
# changes nothing and exits 78 (EX_CONFIG) with the reason.


def _known(ref: ModelRef) -> None:
    catalog = initial_catalog(current_paths().cache_file)
    if catalog.get(ref.model_id) is None:
        click.echo(
            f"note: {ref.model_id} is not in the known catalog; it is tried anyway "
            "(check the router serves it: coderclaw models list --refresh)",
            err=True,
        )


@models.command("set")
@click.argument("ref")
def models_set(ref: str) -> None:
    """Make REF (a ref like huggingface/Qwen/Qwen3-8B:cheapest, or an alias) the default model.

    Writes agents.defaults.model.primary. The config file is rewritten as plain JSON: every key
    and value is kept, JSON5 comments are not.
    """
    done: dict[str, Any] = {}

    def mutate(data: dict[str, Any]) -> None:
        target = resolve_input(data, ref)
        done["ref"], done["previous"] = target, set_primary(data, target)

    edit_config(mutate)
    target, previous = done["ref"], done["previous"]
    was = f" (was {previous})" if previous and previous != str(target) else ""
    click.echo(f"default model: {target}{was}")
    _known(target)


@models.group("fallbacks", invoke_without_command=True)
@click.pass_context
def fallbacks(ctx: click.Context) -> None:
    """The models tried, in order, when the default model fails (list|add|remove|clear).

    Edits rewrite the config file as plain JSON: every key and value is kept, JSON5 comments
    are not.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(fallbacks_list)


@fallbacks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fallbacks_list(as_json: bool) -> None:
    """Show the fallbacks in the order they are tried."""
    settings = settings_or_exit()
    items = list(settings.config.agents.defaults.model.fallbacks)
    if as_json:
        echo_json({"primary": str(settings.chain[0]), "fallbacks": items})
        return
    click.echo(f"primary: {settings.chain[0]}")
    if not items:
        click.echo("no fallbacks (add one: coderclaw models fallbacks add REF)")
    for number, item in enumerate(items, start=1):
        click.echo(f"{number}. {item}")


@fallbacks.command("add")
@click.argument("ref")
def fallbacks_add(ref: str) -> None:
    """Append REF (a ref or an alias) to the fallbacks."""
    done: dict[str, Any] = {}

    def mutate(data: dict[str, Any]) -> None:
        target = resolve_input(data, ref)
        done["ref"], done["added"] = target, add_fallback(data, target)

    edit_config(mutate)
    if done["added"]:
        click.echo(f"added fallback: {done['ref']}")
        _known(done["ref"])
    else:
        click.echo(f"{done['ref']} is already a fallback; nothing changed")


@fallbacks.command("remove")
@click.argument("ref")
def fallbacks_remove(ref: str) -> None:
    """Remove REF (a ref or an alias) from the fallbacks."""
    done: dict[str, Any] = {}

    def mutate(data: dict[str, Any]) -> None:
        target = resolve_input(data, ref)
        done["ref"] = target
        if not remove_fallback(data, target):
            listed = ", ".join(str(f) for f in fallbacks_of(data)) or "none"
            raise GatewayError(
                f"{target} is not a fallback (the fallbacks: {listed}); nothing changed",
                hint="see them with: coderclaw models fallbacks list",
            )

    edit_config(mutate)
    click.echo(f"removed fallback: {done['ref']}")


@fallbacks.command("clear")
def fallbacks_clear() -> None:
    """Remove every fallback: only the default model is tried."""
    done: dict[str, int] = {}

    def mutate(data: dict[str, Any]) -> None:
        done["count"] = clear_fallbacks(data)

    edit_config(mutate)
    click.echo(f"removed {done['count']} fallback(s)")


@models.group("aliases", invoke_without_command=True)
@click.pass_context
def aliases(ctx: click.Context) -> None:
    """Short names for models, usable as `model` in requests (list|add|remove).

    Stored as agents.defaults.models[REF].alias. Edits rewrite the config file as plain JSON:
    every key and value is kept, JSON5 comments are not.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(aliases_list)


@aliases.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def aliases_list(as_json: bool) -> None:
    """Show every alias and the ref it names."""
    settings = settings_or_exit()
    pairs = [(alias, str(ref)) for alias, ref in aliases_of(settings.config)]
    if as_json:
        echo_json({alias: ref for alias, ref in pairs})
        return
    if not pairs:
        click.echo('no aliases (add one: coderclaw models aliases add "Qwen3 8B" Qwen/Qwen3-8B)')
        return
    click.echo(format_table(["ALIAS", "REF"], [[a, r] for a, r in pairs]))


@aliases.command("add")
@click.argument("alias")
@click.argument("ref")
def aliases_add(alias: str, ref: str) -> None:
    """Name REF with ALIAS (replaces the alias REF had before)."""
    done: dict[str, Any] = {}

    def mutate(data: dict[str, Any]) -> None:
        target = parse_ref(ref)
        done["ref"], done["previous"] = target, set_alias(data, alias, target)

    edit_config(mutate)
    was = f" (was {done['previous']!r})" if done["previous"] not in (None, alias.strip()) else ""
    click.echo(f"alias {alias.strip()!r} → {done['ref']}{was}")


@aliases.command("remove")
@click.argument("alias")
def aliases_remove(alias: str) -> None:
    """Remove ALIAS (case-insensitive); the model itself stays configured where it is used."""
    done: dict[str, Any] = {}

    def mutate(data: dict[str, Any]) -> None:
        key = remove_alias(data, alias)
        if key is None:
            known = ", ".join(repr(a) for a, _ in alias_list(data)) or "none"
            raise GatewayError(
                f"no alias {alias!r} (the aliases: {known}); nothing changed",
                hint="see them with: coderclaw models aliases list",
            )
        done["ref"] = key

    edit_config(mutate)
    click.echo(f"removed alias {alias!r} (it named {done['ref']})")
