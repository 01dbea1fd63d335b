"""``coderclaw models …``: the merged catalog and the configured chain."""

from __future__ import annotations

import asyncio

import aiohttp
import click

from gateway.catalog import Catalog
from gateway.cli.common import echo_json, format_table, settings_or_exit
from gateway.discovery import fetch_models, initial_catalog, save_cached_catalog
from gateway.listing import ListedModel, list_models
from gateway.refs import parse_ref
from gateway.settings import Settings


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the Hugging Face models and manage the default chain and aliases."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


async def _refresh(settings: Settings) -> Catalog:
    hf = settings.config.hf
    async with aiohttp.ClientSession() as session:
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
