"""Failover decisions (pure): classify one attempt's outcome, decide what comes next, and the
set of refs the gateway keeps named state for. The randomness is passed in. The per-model
breaker that skips a failed model is ``gateway.breaker`` (SPEC §9).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from gateway.catalog import Catalog
from gateway.refs import POLICIES, ModelRef

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
MODEL_GONE_STATUSES = frozenset({404, 410})
MODEL_GONE_CODES = frozenset({"model_not_supported", "model_not_found", "context_length_exceeded"})
ACCOUNT_STATUSES = frozenset({401, 402, 403})

BACKOFF_BASE_S = 0.5


class Verdict(enum.Enum):
    """What one attempt's outcome means for the chain."""

    OK = "ok"
    RETRYABLE = "retryable"  # same model again (within retries), then the next
    SILENT = "silent"  # a model that said nothing in time: next model at once, never twice
    MODEL_UNAVAILABLE = "model_unavailable"  # next model at once
    CLIENT_ERROR = "client_error"  # the request itself is wrong: back to the client as is
    ACCOUNT = "account"  # the shared token is refused: stop the chain


class Failure(enum.Enum):
    """An attempt that ended without an HTTP status."""

    TIMEOUT = "timeout"  # connect, first-token or idle timeout before the first chunk
    RESET = "reset"  # connection reset or refused before any byte


def classify(
    status: int | None, *, code: str | None = None, failure: Failure | None = None
) -> Verdict:
    """The verdict for an attempt that ended with ``status`` (or ``failure`` when none came)."""
    if failure is Failure.TIMEOUT:
        return Verdict.SILENT
    if failure is Failure.RESET or status is None:
        return Verdict.RETRYABLE
    if 200 <= status < 300:
        return Verdict.OK
    if 300 <= status < 400:
        # Never followed (the prompt and the token would go to the Location): a router that
        # redirects is misconfigured or hostile, and asking it again changes nothing.
        return Verdict.MODEL_UNAVAILABLE
    if status in RETRYABLE_STATUSES or status >= 500:
        return Verdict.RETRYABLE
    if status == 408:
        return Verdict.SILENT
    if status in ACCOUNT_STATUSES:
        return Verdict.ACCOUNT
    if status in MODEL_GONE_STATUSES or (status == 400 and code in MODEL_GONE_CODES):
        return Verdict.MODEL_UNAVAILABLE
    return Verdict.CLIENT_ERROR


class Action(enum.Enum):
    DONE = "done"
    RETRY = "retry"  # the same model again after ``wait``
    NEXT = "next"  # the next model in the chain
    RETURN = "return"  # give this answer to the client
    STOP = "stop"  # stop the chain with an account-wide error


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    wait: float = 0.0


def backoff_seconds(retry_number: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff from 0.5 s with jitter in (0.75, 1]: retry 1 → ~0.5 s, 2 → ~1 s …"""
    return BACKOFF_BASE_S * 2.0 ** (retry_number - 1) * (0.75 + 0.25 * rand())


def decide(
    verdict: Verdict,
    *,
    attempts_on_model: int,
    retries: int,
    retry_after: float | None,
    max_retry_wait: float,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What to do after an attempt; ``attempts_on_model`` counts the one that just ended."""
    if verdict is Verdict.OK:
        return Decision(Action.DONE)
    if verdict is Verdict.CLIENT_ERROR:
        return Decision(Action.RETURN)
    if verdict is Verdict.ACCOUNT:
        return Decision(Action.STOP)
    if verdict is not Verdict.RETRYABLE or attempts_on_model > retries:
        return Decision(Action.NEXT)
    if retry_after is not None:
        if retry_after > max_retry_wait:
            return Decision(Action.NEXT)
        return Decision(Action.RETRY, max(retry_after, 0.0))
    return Decision(Action.RETRY, backoff_seconds(attempts_on_model, rand))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None


# ------------------------------------------------------------------------ known refs

KnownSource = Callable[[], tuple[Collection[ModelRef], Catalog]]


def known_refs(configured: Iterable[ModelRef], catalog: Catalog) -> frozenset[ModelRef]:
    """The configured refs, and every catalog model plain, with each policy suffix and with
    each provider the catalog lists for it."""
    refs = set(configured)
    for entry in catalog.entries:
        suffixes = (None, *sorted(POLICIES), *(p.provider for p in entry.providers))
        refs.update(ModelRef(entry.model_id, suffix) for suffix in suffixes)
    return frozenset(refs)


class KnownRefs:
    """Which refs the gateway keeps state for by name; a client can send any other ref, and
    those share bounded state (the ``other`` metric label).

    ``source`` gives the current (configured refs, catalog). The set is rebuilt only when
    either object is a new one (a reload, a catalog refresh), so a lookup is one set probe.
    """

    __slots__ = ("_labels", "_refs", "_seen", "_source")

    def __init__(self, source: KnownSource) -> None:
        self._source = source
        self._seen: tuple[int, int] = (0, 0)
        self._refs: frozenset[ModelRef] = frozenset()
        self._labels: frozenset[str] = frozenset()

    def _current(self) -> None:
        configured, catalog = self._source()
        seen = (id(configured), id(catalog))
        if seen != self._seen:
            self._refs = known_refs(configured, catalog)
            self._labels = frozenset(str(ref) for ref in self._refs)
            # Only after the rebuild: a failed one is tried again at the next lookup.
            self._seen = seen

    def __contains__(self, ref: ModelRef) -> bool:
        self._current()
        return ref in self._refs

    def has_label(self, label: str) -> bool:
        """Whether ``label`` is the canonical form of a known ref."""
        self._current()
        return label in self._labels


def request_chain(requested: ModelRef | None, configured: Sequence[ModelRef]) -> list[ModelRef]:
    """The chain for one request: the requested model first, then the configured fallbacks.

    ``requested`` None means the configured chain as it is (primary, then fallbacks).
    """
    if requested is None:
        return list(configured)
    return [requested, *(ref for ref in configured[1:] if ref != requested)]


def chain_failure(
    statuses: Sequence[int | None], failures: Sequence[Failure | None], *, budget_spent: bool
) -> tuple[int, str, str]:
    """(status, code, lead sentence) for a request that no model served.

    429 when every attempt was rate limited (the client may retry after the soonest cooldown),
    504 when the time budget ran out or every attempt timed out, 503 when every attempt was a
    503, else 502.
    """
    if statuses and all(s == 429 for s in statuses):
        return 429, "rate_limited", "every model is rate limited"
    if budget_spent:
        return 504, "upstream_timeout", "the time budget was used up"
    if failures and all(f is Failure.TIMEOUT for f in failures):
        return 504, "upstream_timeout", "every model timed out"
    if statuses and all(s == 503 for s in statuses):
        return 503, "upstream_unavailable", "every model is unavailable"
    return 502, "upstream_failed", "every model failed"
