"""The model catalog: the built-in list, the router's ``/v1/models`` payload, and their merge.

Pure code: values in, values out. Fetching and caching live in ``discovery``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from gateway.errors import RefError
from gateway.refs import parse_ref

Source = Literal["builtin", "discovered", "builtin+discovered"]


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    """One provider serving a model, as ``/v1/models`` describes it."""

    provider: str
    status: str = "live"
    context_length: int | None = None
    price_input: float | None = None  # USD per million tokens
    price_output: float | None = None
    supports_tools: bool | None = None
    throughput: float | None = None  # tokens/s from the router's last probe


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What the gateway knows about one Hub model id (no suffix)."""

    model_id: str
    name: str | None = None
    context_window: int | None = None
    max_output: int | None = None
    cost_input: float | None = None  # USD per million tokens
    cost_output: float | None = None
    reasoning: bool = False
    supports_tools: bool | None = None
    providers: tuple[ProviderOffer, ...] = ()
    source: Source = "builtin"

    @property
    def live_providers(self) -> tuple[str, ...]:
        return tuple(p.provider for p in self.providers if p.status == "live")


@dataclass(frozen=True, slots=True)
class Catalog:
    """An ordered set of entries plus where the set came from and when."""

    entries: tuple[CatalogEntry, ...]
    origin: Literal["builtin", "cache", "discovery"] = "builtin"
    fetched_at: float | None = None  # unix seconds of the discovery that produced it
    _by_id: dict[str, CatalogEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update({e.model_id.lower(): e for e in self.entries})

    def get(self, model_id: str) -> CatalogEntry | None:
        """The entry for a Hub id, case-insensitively, or None."""
        return self._by_id.get(model_id.lower())

    def __len__(self) -> int:
        return len(self.entries)


# The ten models of the provider page. Context windows and output limits are the model
# authors' published figures (model cards / config.json `max_position_embeddings`); prices are
# USD per million tokens, the lowest listed by a Hugging Face inference provider for the model
# in 2026 (providers' pricing pages as mirrored in the router's /v1/models). They are only the
# fallback: discovery replaces nothing the built-in states, but fills what it lacks, and the
# prices of a live catalog are shown per provider.
BUILTIN_MODELS: tuple[CatalogEntry, ...] = (
    CatalogEntry("deepseek-ai/DeepSeek-R1", "DeepSeek R1", 163_840, 32_768, 3.00, 7.00, True),
    CatalogEntry("deepseek-ai/DeepSeek-V3.2", "DeepSeek V3.2", 163_840, 65_536, 0.27, 0.40),
    CatalogEntry("Qwen/Qwen3-8B", "Qwen3 8B", 40_960, 8_192, 0.035, 0.138, True),
    CatalogEntry("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct", 32_768, 8_192, 0.30, 0.30),
    CatalogEntry("Qwen/Qwen3-32B", "Qwen3 32B", 40_960, 8_192, 0.10, 0.30, True),
    CatalogEntry(
        "meta-llama/Llama-3.3-70B-Instruct", "Llama 3.3 70B Instruct", 131_072, 8_192, 0.59, 0.79
    ),
    CatalogEntry(
        "meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct", 131_072, 8_192, 0.10, 0.10
    ),
    CatalogEntry("openai/gpt-oss-120b", "GPT-OSS 120B", 131_072, 32_768, 0.15, 0.60, True),
    CatalogEntry("zai-org/GLM-4.7", "GLM 4.7", 202_752, 131_072, 0.60, 2.20, True),
    CatalogEntry("moonshotai/Kimi-K2.5", "Kimi K2.5", 262_144, 32_768, 0.60, 3.00, True),
)


def builtin_catalog() -> Catalog:
    return Catalog(BUILTIN_MODELS, origin="builtin")


class CatalogFormatError(ValueError):
    """The ``/v1/models`` payload is not the OpenAI list shape."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _offer(raw: Any) -> ProviderOffer | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("provider"), str):
        return None
    pricing: Mapping[str, Any] = raw["pricing"] if isinstance(raw.get("pricing"), Mapping) else {}
    ctx = _number(raw.get("context_length"))
    tools = raw.get("supports_tools")
    return ProviderOffer(
        provider=raw["provider"],
        status=raw["status"] if isinstance(raw.get("status"), str) else "live",
        context_length=int(ctx) if ctx else None,
        price_input=_number(pricing.get("input")),
        price_output=_number(pricing.get("output")),
        supports_tools=tools if isinstance(tools, bool) else None,
        throughput=_number(raw.get("throughput")),
    )


def _entry_from_offers(model_id: str, offers: tuple[ProviderOffer, ...]) -> CatalogEntry:
    live = [o for o in offers if o.status == "live"] or list(offers)
    contexts = [o.context_length for o in live if o.context_length]
    priced = [o for o in live if o.price_output is not None]
    cheapest = min(priced, key=lambda o: o.price_output or 0.0) if priced else None
    tools = [o.supports_tools for o in live if o.supports_tools is not None]
    return CatalogEntry(
        model_id=model_id,
        context_window=max(contexts) if contexts else None,
        cost_input=cheapest.price_input if cheapest else None,
        cost_output=cheapest.price_output if cheapest else None,
        supports_tools=any(tools) if tools else None,
        providers=offers,
        source="discovered",
    )


def parse_models_payload(payload: Any) -> list[CatalogEntry]:
    """Entries of an OpenAI-style ``{"object":"list","data":[…]}``; malformed items are skipped."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise CatalogFormatError("expected an object with a 'data' list")
    entries: dict[str, CatalogEntry] = {}
    for item in payload["data"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        model_id = item["id"].strip()
        if model_id in entries or not _is_hub_id(model_id):
            continue
        raw_offers: list[Any] = item["providers"] if isinstance(item.get("providers"), list) else []
        offers = tuple(o for o in map(_offer, raw_offers) if o is not None)
        entries[model_id] = _entry_from_offers(model_id, offers)
    return list(entries.values())


def _is_hub_id(model_id: str) -> bool:
    """``org/name`` that the gateway can turn into a ref (no suffix, no other provider)."""
    try:
        ref = parse_ref(model_id)
    except RefError:
        return False
    return ref.suffix is None and ref.model_id == model_id


def merge_catalog(
    builtin: Iterable[CatalogEntry], discovered: Iterable[CatalogEntry]
) -> tuple[CatalogEntry, ...]:
    """Union of both; built-in figures win, discovered ones fill the gaps; built-ins first."""
    found = {e.model_id.lower(): e for e in discovered}
    merged: list[CatalogEntry] = []
    for base in builtin:
        extra = found.pop(base.model_id.lower(), None)
        if extra is None:
            merged.append(base)
            continue
        merged.append(
            replace(
                base,
                context_window=base.context_window or extra.context_window,
                cost_input=base.cost_input if base.cost_input is not None else extra.cost_input,
                cost_output=base.cost_output if base.cost_output is not None else extra.cost_output,
                supports_tools=extra.supports_tools,
                providers=extra.providers,
                source="builtin+discovered",
            )
        )
    merged.extend(sorted(found.values(), key=lambda e: e.model_id.lower()))
    return tuple(merged)


def catalog_to_json(catalog: Catalog) -> dict[str, Any]:
    """The cache file's content."""
    return {
        "version": 1,
        "fetched_at": catalog.fetched_at,
        "models": [asdict(e) for e in catalog.entries if e.source != "builtin"],
    }


def catalog_from_json(data: Any) -> list[CatalogEntry]:
    """Discovered entries back from the cache file; raises ``CatalogFormatError`` if damaged.

    ``data`` is not modified.
    """
    if not isinstance(data, Mapping) or data.get("version") != 1:
        raise CatalogFormatError("not a version 1 catalog cache")
    models = data.get("models")
    if not isinstance(models, list):
        raise CatalogFormatError("damaged catalog cache: 'models' is not a list")
    return [_entry_from_cache(raw) for raw in models]


_ENTRY_NUMBERS = ("context_window", "max_output", "cost_input", "cost_output")
_OFFER_NUMBERS = ("context_length", "price_input", "price_output", "throughput")


def _entry_from_cache(raw: Any) -> CatalogEntry:
    if not isinstance(raw, Mapping):
        raise CatalogFormatError("damaged catalog cache: an entry is not an object")
    fields = dict(raw)
    offers_raw = fields.pop("providers", [])
    fields["source"] = "discovered"
    try:
        if not isinstance(offers_raw, list) or not all(isinstance(o, Mapping) for o in offers_raw):
            raise TypeError("'providers' is not a list of objects")
        offers = tuple(ProviderOffer(**o) for o in offers_raw)
        entry = CatalogEntry(**fields, providers=offers)
        _check_entry(entry)
    except TypeError as exc:
        raise CatalogFormatError(f"damaged catalog cache: {exc}") from None
    return entry


def _check_entry(entry: CatalogEntry) -> None:
    """Types a JSON file may have got wrong; raises ``TypeError`` naming the field."""

    def number(owner: object, name: str, whole: bool) -> None:
        value = getattr(owner, name)
        kinds = (int,) if whole else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise TypeError(f"{name} of {entry.model_id!r} is not a number")

    if not isinstance(entry.model_id, str) or not _is_hub_id(entry.model_id):
        raise TypeError(f"model id {entry.model_id!r} is not org/name")
    if entry.name is not None and not isinstance(entry.name, str):
        raise TypeError(f"name of {entry.model_id!r} is not a string")
    if not isinstance(entry.reasoning, bool):
        raise TypeError(f"reasoning of {entry.model_id!r} is not true/false")
    for name in _ENTRY_NUMBERS:
        number(entry, name, name in ("context_window", "max_output"))
    for offer in entry.providers:
        if not isinstance(offer.provider, str) or not isinstance(offer.status, str):
            raise TypeError(f"a provider of {entry.model_id!r} has no provider/status string")
        for name in _OFFER_NUMBERS:
            number(offer, name, name == "context_length")
