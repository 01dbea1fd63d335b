"""What a request cost (pure): its tokens priced by the provider that served it.

Prices are USD per million tokens. The price of a request is, in order:

1. the serving provider's ``pricing`` from discovery (``CatalogEntry.providers[].price_*``);
2. else the built-in price of the model (the entry's ``cost_*`` when the entry came from the
   built-in list — for a discovered-only entry those figures are another provider's, so they
   are not used);
3. else unknown: the cost is ``None``, never a made-up 0.

Cached tokens are part of ``input_tokens`` (the router's ``prompt_tokens`` includes them) and
cost the input price: the router's pricing has no separate cached rate. Reasoning tokens are
part of ``output_tokens`` (``completion_tokens``) and cost the output price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.catalog import Catalog, CatalogEntry

PER_TOKENS = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    source: Literal["provider", "builtin"]


def price_of(entry: CatalogEntry | None, provider: str | None) -> Price | None:
    """The price that applies to ``entry`` served by ``provider`` (None: unknown)."""
    if entry is None:
        return None
    if provider:
        wanted = provider.lower()
        for offer in entry.providers:
            if offer.provider.lower() != wanted:
                continue
            if offer.price_input is not None and offer.price_output is not None:
                return Price(offer.price_input, offer.price_output, "provider")
            break
    if entry.source == "discovered" or entry.cost_input is None or entry.cost_output is None:
        return None
    return Price(entry.cost_input, entry.cost_output, "builtin")


def cost_usd(
    price: Price | None, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """Tokens times price; None when the price or both token counts are unknown.

    One missing count (an upstream that reported only ``prompt_tokens``) counts as 0 tokens.
    """
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    tokens_in = input_tokens or 0
    tokens_out = output_tokens or 0
    return (tokens_in * price.input + tokens_out * price.output) / PER_TOKENS


def request_cost(
    catalog: Catalog,
    model_id: str | None,
    provider: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
) -> float | None:
    """The cost of one finished request: ``model_id`` is the served Hub id (no suffix)."""
    entry = catalog.get(model_id) if model_id else None
    return cost_usd(price_of(entry, provider), input_tokens, output_tokens)
