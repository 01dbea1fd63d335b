"""Cost of a request: tokens priced by the provider that served it, else built-in, else None."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.catalog import BUILTIN_MODELS, Catalog, merge_catalog, parse_models_payload
from gateway.ledger.cost import Price, cost_usd, price_of, request_cost
from tests.fake_router import default_models, make_model_entry

PAYLOAD = [*default_models(), make_model_entry("org/unpriced", ["fireworks-ai"])]
CATALOG = Catalog(merge_catalog(BUILTIN_MODELS, parse_models_payload({"data": PAYLOAD})))


def _router_price(model_id: str, provider: str) -> tuple[float, float]:
    """The price the fake router's /v1/models states for that provider (not our parse)."""
    for model in PAYLOAD:
        if model["id"] == model_id:
            for offer in model["providers"]:
                if offer["provider"] == provider:
                    pricing: dict[str, Any] = offer["pricing"]
                    return pricing["input"], pricing["output"]
    raise AssertionError(f"{model_id} via {provider} is not priced in the fake router")


def _builtin_price(model_id: str) -> tuple[float, float]:
    entry = next(e for e in BUILTIN_MODELS if e.model_id == model_id)
    assert entry.cost_input is not None and entry.cost_output is not None
    return entry.cost_input, entry.cost_output


PRICES = [
    # (model, serving provider, expected (in, out) or None, where the price comes from)
    (
        "deepseek-ai/DeepSeek-R1",
        "together",
        _router_price("deepseek-ai/DeepSeek-R1", "together"),
        "provider",
    ),
    (
        "deepseek-ai/DeepSeek-R1",
        "novita",
        _router_price("deepseek-ai/DeepSeek-R1", "novita"),
        "provider",
    ),
    # fireworks-ai offers R1 without pricing: the built-in price, not another provider's.
    (
        "deepseek-ai/DeepSeek-R1",
        "fireworks-ai",
        _builtin_price("deepseek-ai/DeepSeek-R1"),
        "builtin",
    ),
    ("deepseek-ai/DeepSeek-R1", None, _builtin_price("deepseek-ai/DeepSeek-R1"), "builtin"),
    (
        "deepseek-ai/DeepSeek-R1",
        "Together",
        _router_price("deepseek-ai/DeepSeek-R1", "together"),
        "provider",
    ),
    # A provider the catalog does not list for the model: the built-in price.
    ("deepseek-ai/DeepSeek-R1", "groq", _builtin_price("deepseek-ai/DeepSeek-R1"), "builtin"),
    # featherless-ai has no stats in the fake router, hence no pricing.
    ("Qwen/Qwen3-8B", "featherless-ai", _builtin_price("Qwen/Qwen3-8B"), "builtin"),
    ("Qwen/Qwen3-8B", "nscale", _router_price("Qwen/Qwen3-8B", "nscale"), "provider"),
    # Discovered only: the serving provider's price or nothing (the entry's cheapest-offer
    # figure is another provider's price).
    (
        "zai-org/GLM-5.3-Flash",
        "novita",
        _router_price("zai-org/GLM-5.3-Flash", "novita"),
        "provider",
    ),
    ("zai-org/GLM-5.3-Flash", "groq", None, None),
    ("zai-org/GLM-5.3-Flash", None, None, None),
    ("org/unpriced", "fireworks-ai", None, None),
    ("org/not-in-catalog", "together", None, None),
]


@pytest.mark.parametrize(("model_id", "provider", "expected", "source"), PRICES)
def test_price_comes_from_the_serving_provider_then_the_builtin_list(
    model_id: str, provider: str | None, expected: tuple[float, float] | None, source: str | None
) -> None:
    price = price_of(CATALOG.get(model_id), provider)
    if expected is None:
        assert price is None
    else:
        assert price == Price(expected[0], expected[1], source)  # type: ignore[arg-type]


COSTS = [
    # (price, input tokens, output tokens, cost)
    (Price(3.0, 7.0, "builtin"), 1_000_000, 0, 3.0),
    (Price(3.0, 7.0, "builtin"), 0, 1_000_000, 7.0),
    (Price(3.0, 7.0, "builtin"), 500_000, 250_000, 1.5 + 1.75),
    (Price(0.9, 2.7, "provider"), 10, 955, (10 * 0.9 + 955 * 2.7) / 1e6),
    (Price(0.9, 2.7, "provider"), 0, 0, 0.0),  # a priced request with no tokens costs 0
    (Price(0.9, 2.7, "provider"), 1000, None, 1000 * 0.9 / 1e6),  # one count missing
    (Price(0.9, 2.7, "provider"), None, None, None),  # no usage reported: unknown
    (None, 1000, 1000, None),  # no price: unknown, never 0
]


@pytest.mark.parametrize(("price", "tokens_in", "tokens_out", "expected"), COSTS)
def test_cost_is_tokens_times_price_per_million(
    price: Price | None, tokens_in: int | None, tokens_out: int | None, expected: float | None
) -> None:
    result = cost_usd(price, tokens_in, tokens_out)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, rel=1e-12)


def test_request_cost_prices_the_served_model_for_the_provider_that_served() -> None:
    """The served id with the serving provider; an unpriced provider of a discovered-only
    model gives None, not 0."""
    p_in, p_out = _router_price("deepseek-ai/DeepSeek-R1", "together")
    cost = request_cost(CATALOG, "deepseek-ai/DeepSeek-R1", "together", 1200, 300)
    assert cost == pytest.approx((1200 * p_in + 300 * p_out) / 1e6)
    assert request_cost(CATALOG, "org/unpriced", "fireworks-ai", 1200, 300) is None
    assert request_cost(CATALOG, None, None, 1200, 300) is None
