"""Budgets and usage of the shared state (pure): what a replica remembers of the shared spend,
what it has yet to write, and the usage counters' fields.

``SpendBook`` holds, per spend key, the last shared spend Redis answered and the spend this
replica added since that is not written yet (what a lease did not cover, a lease's rest handed
back, and everything while Redis is down). Their sum is the admission answer while Redis is
down: better than a per-replica budget, since it starts from what every replica had spent.
``take_pending`` hands over what the next flush writes; ``put_back`` returns it after a write
that failed."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.shared import keys as k
from gateway.shared.state import UsageDelta, UsageRow

MAX_KNOWN = 16
MAX_PENDING_FIELDS = 4096


@dataclass(slots=True)
class Pending:
    """Spend and usage counted while degraded, to be written to Redis."""

    spend: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (nano, ttl s)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # hash -> field -> delta

    def __bool__(self) -> bool:
        return bool(self.spend or self.usage)


class SpendBook:
    def __init__(self, *, max_known: int = MAX_KNOWN, max_fields: int = MAX_PENDING_FIELDS) -> None:
        self._known: OrderedDict[str, int] = OrderedDict()
        self._pending = Pending()
        self._writing: dict[str, int] = {}  # spend taken by a flush still on its way
        self.max_known = max_known
        self.max_fields = max_fields
        self.dropped = 0  # usage counters not kept: the pending bound was reached

    def known(self, name: str) -> int:
        """The last shared spend of ``name`` Redis answered (0 when none is known)."""
        return self._known.get(name, 0)

    def unwritten(self, name: str) -> int:
        """What this replica added to ``name`` that is not written yet."""
        return self._pending.spend.get(name, (0, 0))[0] + self._writing.get(name, 0)

    def remember(self, name: str, spent: int) -> None:
        """Redis answered: the shared spend of ``name`` is ``spent`` nano-USD."""
        self._known[name] = spent
        self._known.move_to_end(name)
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    def estimate(self, names: Sequence[str], limits: Sequence[int]) -> tuple[int | None, list[int]]:
        """Without Redis: (index of the first key whose estimated spend reached its limit, or
        None; the estimated spend of each key). A limit below 0 is none."""
        spends = [self._known.get(n, 0) + self.unwritten(n) for n in names]
        first = next((i for i, s in enumerate(spends) if 0 <= limits[i] <= s), None)
        return first, spends

    def keep(
        self,
        names: Sequence[str],
        ttls: Sequence[int],
        amounts: Sequence[int],
        usage_key: str | None,
        fields: Sequence[tuple[str, int]],
    ) -> None:
        """Spend (``amounts[i]`` nano-USD to ``names[i]``; 0 adds nothing, below 0 hands a
        lease's rest back) and usage counters to write with the next flush: the spend always,
        usage counters up to ``max_fields`` distinct ones, the rest counted in ``dropped``."""
        for name, ttl, amount in zip(names, ttls, amounts, strict=True):
            if amount == 0:
                continue
            held, _ = self._pending.spend.get(name, (0, ttl))
            self._pending.spend[name] = (held + amount, ttl)
        if usage_key is None:
            return
        counters = self._pending.usage.setdefault(usage_key, {})
        for name, delta in fields:
            if name not in counters and self._field_count() >= self.max_fields:
                self.dropped += 1
                continue
            counters[name] = counters.get(name, 0) + delta

    def take_pending(self) -> Pending:
        """What the next flush writes; counted as unwritten until ``written`` or ``put_back``."""
        pending, self._pending = self._pending, Pending()
        for name, (nano, _) in pending.spend.items():
            self._writing[name] = self._writing.get(name, 0) + nano
        return pending

    def written(self, pending: Pending, totals: Sequence[int]) -> None:
        """The flush of ``pending`` landed: each spend key's new total, in its order."""
        self._stop_writing(pending)
        for name, spent in zip(pending.spend, totals, strict=True):
            self.remember(name, spent)

    def put_back(self, pending: Pending) -> None:
        """A write of ``take_pending``'s value failed: keep it again (with anything new)."""
        self._stop_writing(pending)
        for name, (nano, ttl) in pending.spend.items():
            held, _ = self._pending.spend.get(name, (0, ttl))
            self._pending.spend[name] = (held + nano, ttl)
        for name, counters in pending.usage.items():
            mine = self._pending.usage.setdefault(name, {})
            for key, delta in counters.items():
                mine[key] = mine.get(key, 0) + delta

    def _stop_writing(self, pending: Pending) -> None:
        for name, (nano, _) in pending.spend.items():
            left = self._writing.pop(name, 0) - nano
            if left:
                self._writing[name] = left

    def _field_count(self) -> int:
        return sum(len(c) for c in self._pending.usage.values())


def limit_nano(limit: float | None) -> int:
    """A limit in USD as the ADMIT script takes it: nano-USD, -1 for none."""
    return -1 if limit is None else k.to_nano(limit)


def usage_fields(usage: UsageDelta) -> list[tuple[str, int]]:
    """The usage hash fields one answered request adds to."""
    model, provider = usage.model, usage.provider
    fields = [
        (k.usage_field(model, provider, "requests"), usage.requests),
        (k.usage_field(model, provider, "input_tokens"), max(usage.input_tokens, 0)),
        (k.usage_field(model, provider, "output_tokens"), max(usage.output_tokens, 0)),
    ]
    if usage.cost_usd is None:
        fields.append((k.usage_field(model, provider, "unpriced"), usage.requests))
    else:
        fields.append((k.usage_field(model, provider, "cost_nusd"), k.to_nano(usage.cost_usd)))
    return fields


def usage_rows(day: str, raw: Mapping[bytes | str, bytes | str]) -> list[UsageRow]:
    """The rows of one day's usage hash, sorted by model and provider; fields that are not
    ours are ignored."""
    totals: dict[tuple[str, str | None], dict[str, int]] = {}
    for name, value in raw.items():
        parsed = k.split_usage_field(text(name))
        if parsed is None:
            continue
        model, provider, metric = parsed
        try:
            totals.setdefault((model, provider), {})[metric] = int(value)
        except ValueError:
            continue
    rows = []
    for (model, provider), c in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        cost = None if c.get("unpriced", 0) else k.from_nano(c.get("cost_nusd", 0))
        rows.append(
            UsageRow(
                day,
                model,
                provider,
                c.get("requests", 0),
                c.get("input_tokens", 0),
                c.get("output_tokens", 0),
                cost,
            )
        )
    return rows


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
