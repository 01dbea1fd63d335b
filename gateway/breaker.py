"""The per-model circuit breaker of SPEC §9 (pure): closed → open → half-open, one probe at a time.

No I/O and no clock of its own: every ``now`` is passed in (monotonic seconds; ``now_wall`` is
wall-clock seconds, used only to persist the state across a restart).

- **closed**: no entry; the model is tried normally.
- **open**: the model used up its attempts (``fail``); it is skipped for ``base_seconds``,
  doubling per consecutive opening up to ``max_seconds``; a longer ``Retry-After`` wins, even
  past ``max_seconds``.
- **half-open**: the open time is over. The next request may *probe* it: ``acquire_probe``
  grants the probe to one caller, and while that probe is in flight every other planner skips the
  model. The probe ends with ``succeed`` (closed, the doubling reset), ``fail`` (open again,
  doubled) or ``release_probe`` (inconclusive, e.g. the request was cancelled: the next request
  may probe again).

A ``listener`` (``BreakerListener``) hears of each opening (or extension) and each closing
made here, e.g. to tell the other replicas (SPEC §13); what ``restore`` loads and a
``succeed(announce=False)`` are not told.

A failure of a request that set out before the current opening began (``started`` < the
opening's start) met the same outage as the one that opened it: it never doubles the open time,
though a longer Retry-After still extends it.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from gateway.errors import RefError
from gateway.refs import ModelRef, parse_ref

DEFAULT_BASE_S = 5.0
DEFAULT_MAX_S = 15.0
# Refs that are not configured (a client may name any model) are kept in an LRU of this size.
DEFAULT_MAX_ENTRIES = 256
# A probe whose holder never ended it (a bug, or a request stuck past every timeout) is given
# to the next caller after this long; the engine passes its total time budget.
DEFAULT_PROBE_TIMEOUT_S = 600.0


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Planned:
    """One model to try; ``probe`` means it is half-open: call ``acquire_probe`` before trying
    it, and skip it when that returns None."""

    ref: ModelRef
    probe: bool = False


@dataclass(frozen=True, slots=True)
class ProbeTicket:
    """The right to probe one half-open model; hand it back with ``release_probe``."""

    ref: ModelRef
    token: int


class BreakerListener(Protocol):
    """Told of this breaker's transitions, synchronously: must not block or raise."""

    def opened(self, ref: ModelRef, until: float, since: float, openings: int, reason: str) -> None:
        """``ref`` opened (or its open time was extended) until ``until`` (monotonic)."""

    def closed(self, ref: ModelRef) -> None:
        """``ref`` answered: it is closed again."""


class Description(NamedTuple):
    """For the status page and metrics: the state, the last failure, and when the open time
    ends (monotonic seconds; None when closed)."""

    state: State
    reason: str
    until: float | None


@dataclass(slots=True)
class _Entry:
    until: float  # when the open time ends
    since: float  # when the current opening began
    openings: int  # consecutive openings since the last success
    reason: str
    probe_token: int | None = None
    probe_since: float = 0.0


def open_seconds(
    openings: int,
    retry_after: float | None = None,
    *,
    base_seconds: float = DEFAULT_BASE_S,
    max_seconds: float = DEFAULT_MAX_S,
) -> float:
    """How long the ``openings``-th consecutive opening lasts: ``base_seconds`` doubling per
    opening, at most ``max_seconds``; a longer ``retry_after`` wins."""
    doubled = base_seconds * 2.0 ** min(max(openings - 1, 0), 60)
    return max(min(doubled, max_seconds), retry_after or 0.0)


def failure_reason(outcomes: Sequence[int | str], retry_after: float | None = None) -> str:
    """A short text for the last failure of one model, from its attempts' outcomes in order
    (a status, or ``"timeout"`` / ``"reset"``, as in the attempts header): ``"503 x2"``,
    ``"timeout"``, ``"503, 429 Retry-After 30"``."""
    groups: list[tuple[str, int]] = []
    for outcome in outcomes:
        text = str(outcome)
        if groups and groups[-1][0] == text:
            groups[-1] = (text, groups[-1][1] + 1)
        else:
            groups.append((text, 1))
    parts = [f"{text} x{n}" if n > 1 else text for text, n in groups]
    if retry_after is not None:
        hint = f"Retry-After {_seconds_text(retry_after)}"
        # "429 Retry-After 30" reads as one: the hint belongs to the last outcome.
        parts = [*parts[:-1], f"{parts[-1]} {hint}"] if parts else [hint]
    return ", ".join(parts)


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class Breaker:
    """Per-ref breaker state. Configured refs are kept for ever; other refs in an LRU of
    ``max_entries`` (only open and half-open models have an entry: closed is no entry)."""

    def __init__(
        self,
        base_seconds: float = DEFAULT_BASE_S,
        max_seconds: float = DEFAULT_MAX_S,
        *,
        configured: Iterable[ModelRef] = (),
        max_entries: int = DEFAULT_MAX_ENTRIES,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        self._state: OrderedDict[ModelRef, _Entry] = OrderedDict()
        self._tokens = itertools.count(1)
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.max_entries = max_entries
        self.probe_timeout = probe_timeout
        self._configured: frozenset[ModelRef] = frozenset(configured)
        self.listener: BreakerListener | None = None

    def configure(
        self,
        base_seconds: float,
        max_seconds: float,
        *,
        configured: Iterable[ModelRef],
        probe_timeout: float | None = None,
    ) -> None:
        """Apply a reloaded config; the current state is kept (an open model stays open until
        its end, the new durations count from its next opening)."""
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._configured = frozenset(configured)
        if probe_timeout is not None:
            self.probe_timeout = probe_timeout
        self._evict()

    # -- outcomes ----------------------------------------------------------------------------

    def fail(
        self,
        ref: ModelRef,
        now: float,
        retry_after: float | None = None,
        *,
        started: float | None = None,
        reason: str = "",
    ) -> float:
        """Record that ``ref`` used up its attempts (or its probe failed); returns when its open
        time ends. ``started`` is when the request began trying ``ref``: one that set out before
        the current opening began only extends it by a longer ``retry_after``."""
        entry = self._state.get(ref)
        if entry is not None and started is not None and started < entry.since:
            until = entry.until
            if retry_after:
                entry.until = max(entry.until, now + retry_after)
            if reason:
                entry.reason = reason
            if entry.until > until:
                self._tell_opened(ref, entry)
            return entry.until
        openings = entry.openings + 1 if entry is not None else 1
        seconds = open_seconds(
            openings, retry_after, base_seconds=self.base_seconds, max_seconds=self.max_seconds
        )
        entry = self._state[ref] = _Entry(now + seconds, now, openings, reason or "failed")
        self._state.move_to_end(ref)
        self._evict()
        self._tell_opened(ref, entry)
        return now + seconds

    def succeed(self, ref: ModelRef, *, announce: bool = True) -> None:
        """``ref`` answered: closed, the doubling reset, any probe ended. ``announce`` False
        keeps it from the listener (the news came from elsewhere)."""
        if self._state.pop(ref, None) is not None and announce and self.listener is not None:
            self.listener.closed(ref)

    def _tell_opened(self, ref: ModelRef, entry: _Entry) -> None:
        if self.listener is not None:
            self.listener.opened(ref, entry.until, entry.since, entry.openings, entry.reason)

    # -- probes ------------------------------------------------------------------------------

    def acquire_probe(self, ref: ModelRef, now: float) -> ProbeTicket | None:
        """The probe of a half-open ``ref`` for this caller, or None: it is not half-open, or
        another caller holds its probe. Hand the ticket back with ``release_probe`` in a
        ``finally`` (after ``succeed``/``fail`` that is a no-op)."""
        entry = self._state.get(ref)
        if entry is None or entry.until > now or self._probing(entry, now):
            return None
        entry.probe_token = next(self._tokens)
        entry.probe_since = now
        return ProbeTicket(ref, entry.probe_token)

    def release_probe(self, ticket: ProbeTicket) -> None:
        """End a probe without a verdict (the request was cancelled or served elsewhere): the
        model stays half-open and the next request may probe it."""
        entry = self._state.get(ticket.ref)
        if entry is not None and entry.probe_token == ticket.token:
            entry.probe_token = None

    def _probing(self, entry: _Entry, now: float) -> bool:
        return entry.probe_token is not None and now - entry.probe_since < self.probe_timeout

    # -- queries -----------------------------------------------------------------------------

    def state(self, ref: ModelRef, now: float) -> State:
        entry = self._state.get(ref)
        if entry is None:
            return State.CLOSED
        return State.OPEN if entry.until > now else State.HALF_OPEN

    def describe(self, ref: ModelRef, now: float) -> Description:
        entry = self._state.get(ref)
        if entry is None:
            return Description(State.CLOSED, "", None)
        return Description(self.state(ref, now), entry.reason, entry.until)

    def cooling_until(self, ref: ModelRef, now: float) -> float | None:
        """When the open time of ``ref`` ends, None when it is not open."""
        entry = self._state.get(ref)
        return entry.until if entry is not None and entry.until > now else None

    def cooling(self, now: float) -> list[ModelRef]:
        """The refs that are open (skipped) at ``now``."""
        return [ref for ref, e in self._state.items() if e.until > now]

    def soonest_end(self, refs: Iterable[ModelRef], now: float) -> float | None:
        """The earliest end of an open time among ``refs`` (for a 429's Retry-After)."""
        ends = [u for u in (self.cooling_until(r, now) for r in refs) if u is not None]
        return min(ends) if ends else None

    def plan(self, chain: Sequence[ModelRef], now: float) -> list[Planned]:
        """The models to try, in chain order: closed ones, and half-open ones whose probe is
        free (flagged ``probe``); open ones and half-open ones being probed are skipped. When
        that leaves nothing, the one whose open time ends first is tried (not as a probe)."""
        planned: list[Planned] = []
        seen: set[ModelRef] = set()
        for ref in chain:
            if ref in seen:
                continue
            seen.add(ref)
            entry = self._state.get(ref)
            if entry is None:
                planned.append(Planned(ref))
            elif entry.until <= now and not self._probing(entry, now):
                planned.append(Planned(ref, probe=True))
        if planned or not chain:
            return planned
        return [Planned(min(chain, key=lambda r: self._state[r].until))]

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self, now_wall: float, now_mono: float) -> list[dict[str, Any]]:
        """The open and half-open entries as plain rows with wall-clock times, to persist at
        shutdown: ``{"ref", "openings", "since", "until", "reason"}``."""
        return [
            {
                "ref": str(ref),
                "openings": e.openings,
                "since": now_wall - (now_mono - e.since),
                "until": now_wall + (e.until - now_mono),
                "reason": e.reason,
            }
            for ref, e in self._state.items()
        ]

    def restore(self, rows: Iterable[Mapping[str, Any]], now_wall: float, now_mono: float) -> int:
        """Load ``snapshot`` rows at start; returns how many were kept.

        A row still open keeps its remaining time (never more than its own length, in case the
        wall clock went back). A row whose open time ended less than ``max_seconds`` ago comes
        back half-open with its opening count (the first request probes it; a still-dead model
        then re-opens doubled); an older one, or a malformed one, is dropped: it is no longer
        current. Probes never survive a restart.
        """
        kept = 0
        for row in rows:
            entry = self._row_entry(row, now_wall, now_mono)
            if entry is None:
                continue
            ref, value = entry
            self._state[ref] = value
            self._state.move_to_end(ref)
            kept += 1
        self._evict()
        return kept

    def _row_entry(
        self, row: Mapping[str, Any], now_wall: float, now_mono: float
    ) -> tuple[ModelRef, _Entry] | None:
        try:
            ref = parse_ref(row["ref"])
            openings = int(row["openings"])
            since, until = float(row["since"]), float(row["until"])
            reason = str(row.get("reason") or "")
        except (KeyError, TypeError, ValueError, RefError):
            return None
        if not (math.isfinite(since) and math.isfinite(until)) or openings < 1 or until < since:
            return None
        remaining = min(until - now_wall, until - since)
        if remaining <= -self.max_seconds:
            return None
        end = now_mono + max(remaining, 0.0)
        return ref, _Entry(end, min(now_mono - (now_wall - since), now_mono), openings, reason)

    def _evict(self) -> None:
        extra = sum(1 for ref in self._state if ref not in self._configured) - self.max_entries
        if extra <= 0:
            return
        for ref in [r for r in self._state if r not in self._configured][:extra]:
            del self._state[ref]
