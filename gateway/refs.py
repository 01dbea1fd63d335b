"""Model references: parse once, format everywhere (pure code).

A ref is ``huggingface/<org>/<model>[:<suffix>]``. The suffix is a routing policy
(``fastest``, ``cheapest``, ``preferred``) or a provider slug (``together``, ``groq``, …).
A bare ``<org>/<model>`` means the huggingface provider; a doubled ``huggingface/`` prefix is
tolerated. The router is sent ``<org>/<model>[:<suffix>]``, never the prefix.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from gateway.errors import RefError

PROVIDER = "huggingface"
POLICIES = frozenset({"fastest", "cheapest", "preferred"})
# The placeholder names clients send when they have no model to name (huggingface_hub's
# InferenceClient sends "dummy" with a base_url, TGI-style clients "tgi") mean the chain too.
CHAIN_NAMES = frozenset({"", "coderclaw", "default", "dummy", "tgi"})

# Hub repo ids: letters, digits, '-', '_', '.'; at most 96 characters per part.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SUFFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_EXAMPLE = "huggingface/<org>/<model>[:fastest|:cheapest|:<provider>]"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model reference; ``str(ref)`` is its canonical form."""

    model_id: str
    suffix: str | None = None
    provider: str = PROVIDER
    # What the router receives in ``model``, and the canonical form: computed once (a request
    # names its refs a dozen times, in headers, the log line, metrics and the ledger).
    upstream_id: str = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)
    # Refs key the breaker's, the hedging's and the metrics' dicts: hashed once (a dataclass's
    # own __hash__ builds a tuple of the fields at every lookup).
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        upstream = f"{self.model_id}:{self.suffix}" if self.suffix else self.model_id
        object.__setattr__(self, "upstream_id", upstream)
        object.__setattr__(self, "_text", f"{self.provider}/{upstream}")
        object.__setattr__(self, "_hash", hash((self.model_id, self.suffix, self.provider)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def base(self) -> ModelRef:
        """The same model without a suffix."""
        return ModelRef(self.model_id, None, self.provider)

    @property
    def is_policy(self) -> bool:
        return self.suffix in POLICIES

    def __str__(self) -> str:
        return self._text


def parse_ref(text: str) -> ModelRef:
    """Parse a model reference or raise ``RefError`` saying what is wrong with it."""
    if not isinstance(text, str):
        raise RefError(f"a model reference must be a string, got {type(text).__name__}")
    return _parse_ref(text)


@functools.lru_cache(maxsize=1024)  # a request's model is parsed on every request
def _parse_ref(text: str) -> ModelRef:
    raw = text.strip()
    if not raw:
        raise RefError(f"empty model reference; expected {_EXAMPLE}")
    if any(ch.isspace() for ch in raw):
        raise RefError(f"model reference {text!r} contains white space; expected {_EXAMPLE}")
    body, sep, suffix = raw.partition(":")
    parts = body.split("/")
    prefixed = False
    while len(parts) > 2 and parts[0].lower() == PROVIDER:
        parts, prefixed = parts[1:], True
    if len(parts) != 2:
        if len(parts) == 1:
            reason = f"{text!r} has no organisation part"
        elif len(parts) == 3 and not prefixed:
            reason = f"{text!r} names provider {parts[0]!r}; only {PROVIDER!r} is supported"
        else:
            reason = f"{text!r} has too many '/' parts"
        raise RefError(f"invalid model reference: {reason}; expected {_EXAMPLE}")
    org, name = parts
    for label, part in (("organisation", org), ("model name", name)):
        if not part:
            raise RefError(f"invalid model reference {text!r}: empty {label}; expected {_EXAMPLE}")
        if not _PART.fullmatch(part) or ".." in part:
            raise RefError(
                f"invalid model reference {text!r}: bad character in {label} {part!r} "
                "(letters, digits, '-', '_' and '.' only)"
            )
    if sep:
        suffix = suffix.lower()
        if not suffix:
            raise RefError(
                f"invalid model reference {text!r}: empty suffix after ':'; expected "
                f"{', '.join(sorted(POLICIES))} or a provider slug, or no ':'"
            )
        if not _SUFFIX.fullmatch(suffix):
            raise RefError(
                f"invalid model reference {text!r}: suffix {suffix!r} is not a policy "
                f"({', '.join(sorted(POLICIES))}) or a provider slug"
            )
        return ModelRef(f"{org}/{name}", suffix)
    return ModelRef(f"{org}/{name}")


def is_chain_name(name: str) -> bool:
    """True for the names that mean 'the configured chain' (SPEC §10.3)."""
    return name.strip().lower() in CHAIN_NAMES


class AliasMap(Mapping[str, ModelRef]):
    """Aliases looked up case-insensitively (and stripped); iteration gives them as written."""

    __slots__ = ("_by_key",)

    def __init__(self, aliases: Iterable[tuple[str, ModelRef]] = ()) -> None:
        by_key: dict[str, tuple[str, ModelRef]] = {}
        for alias, ref in aliases:
            name = alias.strip()
            if name:
                by_key[name.lower()] = (name, ref)
        self._by_key = by_key

    def __getitem__(self, name: str) -> ModelRef:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._by_key[name.strip().lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def __repr__(self) -> str:
        return f"AliasMap({dict(self.items())!r})"


def build_alias_map(aliases: Iterable[tuple[str, ModelRef]]) -> AliasMap:
    """Aliases matched case-insensitively; a later alias that differs only in case wins."""
    return AliasMap(aliases)


def resolve_model(name: str, aliases: Mapping[str, ModelRef]) -> ModelRef:
    """An alias (case-insensitive) or a ref; raises ``RefError`` for anything else."""
    found = aliases.get(name) or aliases.get(name.strip().lower())
    if found is not None:
        return found
    return parse_ref(name)
