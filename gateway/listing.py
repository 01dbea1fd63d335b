"""What ``models list`` and ``GET /v1/models`` show: the catalog as refs, plus configured refs.

Pure code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.catalog import Catalog, CatalogEntry
from gateway.refs import ModelRef


@dataclass(frozen=True, slots=True)
class ListedModel:
    ref: ModelRef
    entry: CatalogEntry | None
    aliases: tuple[str, ...]
    source: str
    in_chain: bool

    @property
    def owner(self) -> str:
        return self.ref.model_id.split("/", 1)[0]


def list_models(
    catalog: Catalog,
    configured: Iterable[ModelRef],
    aliases: Mapping[str, ModelRef],
    chain: Iterable[ModelRef],
) -> list[ListedModel]:
    """Every catalog model as a ref, then configured refs (suffixed ones included) not yet seen."""
    by_ref: dict[ModelRef, list[str]] = {}
    for alias, ref in aliases.items():
        by_ref.setdefault(ref, []).append(alias)
    chain_list = list(chain)
    chain_refs = set(chain_list)
    out: list[ListedModel] = []
    seen: set[ModelRef] = set()
    for entry in catalog.entries:
        ref = ModelRef(entry.model_id)
        seen.add(ref)
        out.append(
            ListedModel(ref, entry, tuple(by_ref.get(ref, ())), entry.source, ref in chain_refs)
        )
    # In a stable order: the chain, then the configured models, then the aliases' targets.
    for ref in [*chain_list, *configured, *by_ref]:
        if ref in seen:
            continue
        seen.add(ref)
        out.append(
            ListedModel(
                ref,
                catalog.get(ref.model_id),
                tuple(by_ref.get(ref, ())),
                "config",
                ref in chain_refs,
            )
        )
    return out
