"""The catalog (SPEC §5, HF_ROUTER_FACTS §1): built-in list, /v1/models parsing, merge, cache."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from gateway.catalog import (
    BUILTIN_MODELS,
    Catalog,
    CatalogEntry,
    CatalogFormatError,
    ProviderOffer,
    builtin_catalog,
    catalog_from_json,
    catalog_to_json,
    merge_catalog,
    parse_models_payload,
)
from gateway.listing import list_models
from gateway.refs import build_alias_map, parse_ref
from tests.provider_page import PAGE_MODELS

# HF_ROUTER_FACTS.md §1.2, verbatim (real curl output pasted into hub-docs).
SAMPLE_ENTRY = json.loads(
    """
{
  "id": "deepseek-ai/DeepSeek-V4-Pro",
  "object": "model",
  "created": 1776837885,
  "owned_by": "deepseek-ai",
  "architecture": {
    "input_modalities": [
      "text"
    ],
    "output_modalities": [
      "text"
    ]
  },
  "providers": [
    {
      "provider": "novita",
      "status": "live",
      "context_length": 1048576,
      "pricing": {
        "input": 1.69,
        "output": 3.38
      },
      "supports_tools": true,
      "supports_structured_output": false,
      "first_token_latency_ms": 1490,
      "throughput": 24.69124008437934,
      "is_model_author": false
    },
    {
      "provider": "together",
      "status": "live",
      "context_length": 512000,
      "pricing": {
        "input": 2.1,
        "output": 4.4
      },
      "supports_tools": true,
      "supports_structured_output": true,
      "first_token_latency_ms": 611,
      "throughput": 40.13113557470821,
      "is_model_author": false
    },
    {
      "provider": "fireworks-ai",
      "status": "live",
      "context_length": 1048576,
      "supports_tools": true,
      "supports_structured_output": true,
      "first_token_latency_ms": 588.4,
      "throughput": 45.42948747753918,
      "is_model_author": false
    },
    {
      "provider": "featherless-ai",
      "status": "live",
      "is_model_author": false
    },
    {
      "provider": "deepinfra",
      "status": "live",
      "context_length": 65536,
      "pricing": {
        "input": 1.74,
        "output": 3.48
      },
      "supports_tools": true,
      "supports_structured_output": true,
      "first_token_latency_ms": 525.8,
      "throughput": 34.615908579189465,
      "is_model_author": false
    }
  ]
}
"""
)


def _payload(*items: Any) -> dict[str, Any]:
    return {"object": "list", "data": list(items)}


def test_builtin_catalog_has_the_ten_page_models_with_full_figures() -> None:
    """Each of the provider page's ten models has context, max output, both prices, reasoning."""
    assert [e.model_id for e in BUILTIN_MODELS] == PAGE_MODELS
    for entry in BUILTIN_MODELS:
        assert entry.name
        assert entry.context_window and entry.context_window >= 32_768
        assert entry.max_output and 0 < entry.max_output <= entry.context_window
        assert entry.cost_input is not None and entry.cost_input > 0
        assert entry.cost_output is not None and entry.cost_output >= entry.cost_input
        assert isinstance(entry.reasoning, bool)
        assert entry.source == "builtin"
    assert builtin_catalog().get("deepseek-ai/deepseek-r1") is BUILTIN_MODELS[0]
    assert builtin_catalog().get("deepseek-ai/DeepSeek-R1")
    assert builtin_catalog().get("nobody/nothing") is None
    reasoning = {e.model_id for e in BUILTIN_MODELS if e.reasoning}
    assert "deepseek-ai/DeepSeek-R1" in reasoning
    assert "meta-llama/Llama-3.3-70B-Instruct" not in reasoning


def test_parse_the_verbatim_router_sample() -> None:
    """The §1.2 sample becomes one entry with every provider and figures from the live ones."""
    [entry] = parse_models_payload(_payload(SAMPLE_ENTRY))
    assert entry.model_id == "deepseek-ai/DeepSeek-V4-Pro"
    assert entry.source == "discovered"
    assert entry.live_providers == (
        "novita",
        "together",
        "fireworks-ai",
        "featherless-ai",
        "deepinfra",
    )
    assert entry.context_window == 1_048_576, "the largest context any live provider offers"
    assert (entry.cost_input, entry.cost_output) == (1.69, 3.38), "the cheapest priced provider"
    assert entry.supports_tools is True
    assert entry.providers[0] == ProviderOffer(
        "novita", "live", 1_048_576, 1.69, 3.38, True, 24.69124008437934
    )
    fireworks, featherless = entry.providers[2], entry.providers[3]
    assert (fireworks.price_input, fireworks.price_output) == (None, None)
    assert fireworks.context_length == 1_048_576
    assert featherless == ProviderOffer("featherless-ai", "live")


def test_parse_does_not_modify_the_payload() -> None:
    """Pure: the decoded JSON is left as it was."""
    payload = _payload(copy.deepcopy(SAMPLE_ENTRY))
    before = copy.deepcopy(payload)
    parse_models_payload(payload)
    assert payload == before


def test_malformed_entries_are_skipped_and_the_rest_kept() -> None:
    """Items without a usable id are dropped; bad provider fields become unknown, not errors."""
    good = {"id": "org/good", "providers": [{"provider": "groq", "status": "live"}]}
    payload = _payload(
        "not an object",
        None,
        {"object": "model"},  # no id
        {"id": 42},
        {"id": "no-slash"},
        {"id": "too/many/parts"},
        {"id": "org/with:suffix"},
        {"id": "org/bad name"},
        {"id": ""},
        good,
        {"id": "org/good", "providers": []},  # a duplicate: the first one counts
        {"id": "org/no-providers"},
        {"id": "org/providers-not-a-list", "providers": "groq"},
        {
            "id": "org/odd-offers",
            "providers": [
                "groq",
                {"status": "live"},  # no provider name
                {
                    "provider": "novita",
                    "context_length": "big",
                    "pricing": {"input": -1, "output": math.inf},
                    "supports_tools": "yes",
                    "throughput": True,
                },
                {"provider": "together", "status": 3, "pricing": "cheap"},
            ],
        },
    )
    entries = {e.model_id: e for e in parse_models_payload(payload)}
    assert list(entries) == [
        "org/good",
        "org/no-providers",
        "org/providers-not-a-list",
        "org/odd-offers",
    ]
    assert entries["org/good"].live_providers == ("groq",)
    assert entries["org/no-providers"].providers == ()
    assert entries["org/no-providers"].context_window is None
    odd = entries["org/odd-offers"]
    assert odd.providers == (ProviderOffer("novita"), ProviderOffer("together"))
    assert (odd.context_window, odd.cost_input, odd.cost_output, odd.supports_tools) == (
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("payload", [[], {"data": {}}, {"object": "list"}, "list", None])
def test_a_payload_that_is_not_the_list_shape_is_a_format_error(payload: Any) -> None:
    """The envelope must be {"object": "list", "data": [...]}."""
    with pytest.raises(CatalogFormatError, match="'data' list"):
        parse_models_payload(payload)


def test_errored_providers_only_count_when_no_provider_is_live() -> None:
    """Figures come from live providers; a model only in error still shows what it has."""
    mixed = {
        "id": "org/m",
        "providers": [
            {"provider": "a", "status": "error", "context_length": 999_999,
             "pricing": {"input": 0.01, "output": 0.01}},
            {"provider": "b", "status": "live", "context_length": 8192,
             "pricing": {"input": 1, "output": 2}},
        ],
    }  # fmt: skip
    only_error = {
        "id": "org/e",
        "providers": [{"provider": "a", "status": "error", "context_length": 4096}],
    }
    by_id = {e.model_id: e for e in parse_models_payload(_payload(mixed, only_error))}
    assert (by_id["org/m"].context_window, by_id["org/m"].cost_output) == (8192, 2.0)
    assert by_id["org/m"].live_providers == ("b",)
    assert by_id["org/e"].context_window == 4096
    assert by_id["org/e"].live_providers == ()


def test_merge_fills_gaps_keeps_builtin_figures_and_labels_sources() -> None:
    """Union: built-ins first (their figures win), discovered ones fill gaps; each has a source."""
    builtin = [
        CatalogEntry("a/full", "Full", 1000, 100, 1.0, 2.0, True),
        CatalogEntry("a/gaps", "Gaps"),
        CatalogEntry("a/alone", "Alone", 10, 5, 0.1, 0.2),
    ]
    discovered = parse_models_payload(
        _payload(
            {"id": "z/new", "providers": [{"provider": "groq", "status": "live"}]},
            {"id": "A/FULL", "providers": [{"provider": "together", "status": "live",
             "context_length": 5000, "pricing": {"input": 9, "output": 9},
             "supports_tools": True}]},
            {"id": "a/gaps", "providers": [{"provider": "novita", "status": "live",
             "context_length": 7000, "pricing": {"input": 0.5, "output": 0.7}}]},
            {"id": "b/new", "providers": []},
        )
    )  # fmt: skip
    merged = {e.model_id: e for e in merge_catalog(builtin, discovered)}
    assert list(merged) == ["a/full", "a/gaps", "a/alone", "b/new", "z/new"]
    full = merged["a/full"]
    assert (full.context_window, full.cost_input, full.cost_output) == (1000, 1.0, 2.0)
    assert (full.name, full.max_output, full.reasoning) == ("Full", 100, True)
    assert full.supports_tools is True
    assert full.live_providers == ("together",)
    assert full.source == "builtin+discovered"
    gaps = merged["a/gaps"]
    assert (gaps.context_window, gaps.cost_input, gaps.cost_output) == (7000, 0.5, 0.7)
    assert gaps.name == "Gaps"
    assert gaps.source == "builtin+discovered"
    assert merged["a/alone"] == builtin[2]
    assert merged["a/alone"].source == "builtin"
    assert merged["z/new"].source == "discovered"
    assert merged["z/new"].live_providers == ("groq",)


def _discovered_catalog() -> Catalog:
    discovered = parse_models_payload(
        _payload(
            SAMPLE_ENTRY,
            {"id": "deepseek-ai/DeepSeek-R1", "providers": [{"provider": "together",
             "status": "live", "context_length": 131072, "pricing": {"input": 3, "output": 7}}]},
        )
    )  # fmt: skip
    return Catalog(merge_catalog(BUILTIN_MODELS, discovered), "discovery", 1_700_000_000.5)


def test_cache_round_trip() -> None:
    """to_json → JSON text → from_json → merge gives back the same entries."""
    catalog = _discovered_catalog()
    data = json.loads(json.dumps(catalog_to_json(catalog)))
    assert data["version"] == 1
    assert data["fetched_at"] == 1_700_000_000.5
    assert {m["model_id"] for m in data["models"]} == {
        "deepseek-ai/DeepSeek-V4-Pro",
        "deepseek-ai/DeepSeek-R1",
    }, "built-in-only entries are not cached: the code has them"
    before = copy.deepcopy(data)
    entries = catalog_from_json(data)
    assert data == before, "from_json does not modify its input"
    assert merge_catalog(BUILTIN_MODELS, entries) == catalog.entries
    r1 = Catalog(merge_catalog(BUILTIN_MODELS, entries)).get("deepseek-ai/DeepSeek-R1")
    assert r1 is not None and r1.source == "builtin+discovered"
    assert r1.context_window == 163_840, "the built-in figure survives the round trip"


def _valid_cache() -> dict[str, Any]:
    return catalog_to_json(_discovered_catalog())


def _damage(change: str) -> Any:
    data: Any = json.loads(json.dumps(_valid_cache()))
    first = data["models"][0]
    if change == "not-an-object":
        return ["models"]
    if change == "version":
        data["version"] = 2
    elif change == "models-not-list":
        data["models"] = {"a": 1}
    elif change == "entry-not-object":
        data["models"][0] = "deepseek-ai/DeepSeek-R1"
    elif change == "unknown-field":
        first["colour"] = "red"
    elif change == "providers-not-list":
        first["providers"] = "novita"
    elif change == "provider-unknown-field":
        first["providers"][0]["speed"] = 1
    elif change == "context-is-text":
        first["context_window"] = "big"
    elif change == "price-is-bool":
        first["cost_input"] = True
    elif change == "bad-model-id":
        first["model_id"] = "no slash"
    elif change == "reasoning-not-bool":
        first["reasoning"] = "yes"
    elif change == "offer-context-float":
        first["providers"][0]["context_length"] = 1.5
    elif change == "missing-model-id":
        del first["model_id"]
    return data


@pytest.mark.parametrize(
    "change",
    [
        "not-an-object",
        "version",
        "models-not-list",
        "entry-not-object",
        "unknown-field",
        "providers-not-list",
        "provider-unknown-field",
        "context-is-text",
        "price-is-bool",
        "bad-model-id",
        "reasoning-not-bool",
        "offer-context-float",
        "missing-model-id",
    ],
)
def test_a_damaged_cache_is_a_format_error(change: str) -> None:
    """Any damage is one CatalogFormatError (the caller then falls back), never a crash."""
    with pytest.raises(CatalogFormatError):
        catalog_from_json(_damage(change))


def test_listing_shows_catalog_then_configured_refs_with_aliases_as_written() -> None:
    """models list: every catalog model, then configured refs not in it; aliases and chain."""
    catalog = builtin_catalog()
    r1 = parse_ref("huggingface/deepseek-ai/DeepSeek-R1")
    cheap = parse_ref("huggingface/Qwen/Qwen3-8B:cheapest")
    extra = parse_ref("huggingface/org/unlisted")
    aliases = build_alias_map([("DeepSeek R1", r1), ("Qwen3 8B (cheapest)", cheap)])
    chain = [extra, r1]
    items = list_models(catalog, [cheap, r1], aliases, chain)
    assert [str(i.ref) for i in items] == [
        *(f"huggingface/{m}" for m in PAGE_MODELS),
        "huggingface/org/unlisted",
        "huggingface/Qwen/Qwen3-8B:cheapest",
    ]
    by_ref = {str(i.ref): i for i in items}
    assert by_ref["huggingface/deepseek-ai/DeepSeek-R1"].aliases == ("DeepSeek R1",)
    assert by_ref["huggingface/deepseek-ai/DeepSeek-R1"].in_chain
    assert by_ref["huggingface/deepseek-ai/DeepSeek-R1"].source == "builtin"
    suffixed = by_ref["huggingface/Qwen/Qwen3-8B:cheapest"]
    assert suffixed.aliases == ("Qwen3 8B (cheapest)",)
    assert suffixed.source == "config"
    assert suffixed.entry is catalog.get("Qwen/Qwen3-8B"), "a suffixed ref shows its model's data"
    assert by_ref["huggingface/org/unlisted"].entry is None
    assert by_ref["huggingface/org/unlisted"].in_chain
    assert not by_ref["huggingface/Qwen/Qwen3-8B"].in_chain
