"""The pure parts of the shared state (SPEC §13): key names and TTLs, the breaker events on the
wire, the URL as logged, the degraded spend estimate, usage rows, the config section, and the
mirror that lands other replicas' news in the real ``Breaker``."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.breaker import Breaker, State
from gateway.cli.usage_cmd import SHARED_MAX_DAYS, shared_days, shared_groups
from gateway.hedging import HedgeStats
from gateway.ledger.usage import Total
from gateway.refs import parse_ref
from gateway.shared import BreakerMirror, LocalState, StateSection, UsageDelta, UsageRow
from gateway.shared import keys as k
from gateway.shared.spend import SpendBook, limit_nano, usage_fields, usage_rows

REF = "huggingface/org/model-a"


class FixedClock:
    def __init__(self, wall: float = 1_800_000_000.0, mono: float = 1000.0) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2pass@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://gw:p%40ss@cache.internal:6380/1", "rediss://gw:***@cache.internal:6380/1"),
        ("redis://onlyuser@redis:6379", "redis://onlyuser@redis:6379"),
        ("unix:///run/redis.sock?db=0&password=sekrit", "unix:///run/redis.sock?db=0&password=***"),
        (
            "rediss://:pw@h:6380/0?ssl_ca_certs=/etc/ca.pem",
            "rediss://:***@h:6380/0?ssl_ca_certs=/etc/ca.pem",
        ),
    ],
)
def test_the_url_is_logged_with_its_password_masked(url: str, logged: str) -> None:
    """The password of the userinfo and a ``password=`` query value never reach a log line."""
    assert k.masked_url(url) == logged


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://127.0.0.1:6379/0", ""),
        ("redis://:hunter2pass@redis:6379/0", "hunter2pass"),
        ("rediss://gw:p%40ss@cache.internal:6380/1", "p@ss"),
        ("redis://onlyuser@redis:6379", ""),
        ("unix:///run/redis.sock?db=0&password=sekrit", "sekrit"),
        ("redis://:${REDIS_PASSWORD}@redis:6379/0", "${REDIS_PASSWORD}"),
        ("redis://[::1:6379", ""),  # not a URL: nothing to find
    ],
)
def test_the_password_of_a_url_is_found_in_both_forms_masked_url_hides(
    url: str, password: str
) -> None:
    """What the log redactor, ``config get`` and the Redis layer's error texts hide."""
    assert k.redis_password(url) == password


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:6379/0", None),
        ("rediss://cache:6380/0", None),
        ("unix:///run/redis.sock", None),
        ("http://redis:6379", "expected a redis://, rediss:// (TLS) or unix:// URL"),
        ("redis:///0", "the URL names no host"),
        ("redis://redis:notaport/0", "not a URL"),
        ("", "expected a redis://, rediss:// (TLS) or unix:// URL"),
    ],
)
def test_only_redis_urls_are_accepted(url: str, problem: str | None) -> None:
    """redis://, rediss:// (TLS) and unix:// are Redis URLs; anything else says what to write."""
    found = k.check_url(url)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_the_config_section_takes_camel_case_keys_and_refuses_a_bad_url() -> None:
    """``state.redis`` with ``url``, ``keyPrefix``, ``timeoutMs``; absent is local state; a
    wrong scheme, an unknown key or a zero timeout is refused, with the URL masked."""
    assert StateSection().redis is None
    section = StateSection.model_validate(
        {"redis": {"url": "rediss://:pw@cache:6380/0", "keyPrefix": "team:", "timeoutMs": 80}}
    )
    assert section.redis is not None
    assert (section.redis.key_prefix, section.redis.timeout_ms) == ("team:", 80)
    assert StateSection.model_validate({"redis": {"url": "redis://r"}}).redis.timeout_ms == 50  # type: ignore[union-attr]
    assert "pw" not in repr(section)
    for bad in (
        {"url": "http://:topsecret@r:6379"},
        {"url": "redis://r", "keyprefix": "x"},
        {"url": "redis://r", "timeoutMs": 0},
        {"url": "redis://r", "keyPrefix": ""},
    ):
        with pytest.raises(ValidationError) as info:
            StateSection.model_validate({"redis": bad})
        assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("period", "ttl"), [("daily", 2 * 86400), ("monthly", 62 * 86400), ("weekly", 62 * 86400)]
)
def test_a_spend_key_lives_past_its_period(period: str, ttl: int) -> None:
    """A day's spend key expires 2 days after its last write, a month's after 62."""
    assert k.period_ttl(period) == ttl


@pytest.mark.parametrize(
    ("until", "now", "ms"),
    [
        (1005.0, 1000.0, 35_000),
        (1000.0, 1000.0, 30_000),
        (900.0, 1000.0, 1),
        (1000.2, 1000.0, 30_200),
    ],
)
def test_an_openings_key_lives_to_its_end_plus_the_margin(
    until: float, now: float, ms: int
) -> None:
    """The key outlives the open time by ``BREAKER_MARGIN_S``, and never has a TTL of 0."""
    assert k.breaker_ttl_ms(until, now) == ms


@pytest.mark.parametrize(
    ("text", "escaped"),
    [("coderclaw:", "coderclaw:"), ("a*b?", r"a\*b\?"), ("[x]", r"\[x\]"), ("back\\", "back\\\\")],
)
def test_a_prefix_is_a_literal_in_scan_match(text: str, escaped: str) -> None:
    assert k.glob_escape(text) == escaped


@pytest.mark.parametrize(
    ("usd", "nano"), [(0.01, 10_000_000), (1e-9, 1), (0.0, 0), (-1.0, 0), (float("nan"), 0)]
)
def test_money_is_whole_nano_dollars(usd: float, nano: int) -> None:
    assert k.to_nano(usd) == nano


def test_thirty_cents_add_up_exactly_in_nano_dollars() -> None:
    """Why integers: 30 x $0.01 as floats is not $0.30, as nano-USD it is."""
    assert sum([0.01] * 30) != 0.30
    assert sum([k.to_nano(0.01)] * 30) == k.to_nano(0.30)


def test_reconnect_delays_double_up_to_the_cap() -> None:
    assert list(itertools.islice(k.retry_delays(1.0, 5.0), 6)) == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


OPENING = k.Opening(REF, 1005.5, 1000.0, "503 x2", 3, "pod-a")


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (k.encode_opening(OPENING), OPENING),
        (k.encode_closing(k.Closing(REF, "pod-b")), k.Closing(REF, "pod-b")),
        (
            b'{"kind":"open","ref":"r","until":2,"since":1,"replica":"x"}',
            k.Opening("r", 2, 1, "", 1, "x"),
        ),
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"kind":"open","ref":"r","until":"soon","since":1,"replica":"x"}', None),
        (b'{"kind":"open","ref":"r","until":1e999,"since":1,"replica":"x"}', None),
        (b'{"kind":"open","ref":"r","until":2,"since":1,"replica":"x","openings":0}', None),
        (b'{"kind":"open","ref":"r","until":2,"since":1,"replica":"x","openings":true}', None),
        (b'{"kind":"open","ref":"","until":2,"since":1,"replica":"x"}', None),
        (b'{"kind":"close","ref":"r"}', None),
        (b'{"kind":"reset","ref":"r","replica":"x"}', None),
    ],
)
def test_breaker_events_round_trip_and_malformed_ones_are_dropped(
    data: bytes, event: k.Opening | k.Closing | None
) -> None:
    """Another program may publish on the channel: anything not a well-formed event is None."""
    assert k.decode_event(data) == event


@pytest.mark.parametrize(
    ("field", "parsed"),
    [
        (k.usage_field(REF, "novita", "requests"), (REF, "novita", "requests")),
        (k.usage_field(REF, None, "cost_nusd"), (REF, None, "cost_nusd")),
        (f"{REF}|novita|bogus", None),
        ("|novita|requests", None),
        ("plain", None),
    ],
)
def test_usage_fields_name_model_provider_and_metric(
    field: str, parsed: tuple[str, str | None, str] | None
) -> None:
    assert k.split_usage_field(field) == parsed


def test_usage_rows_total_per_model_and_provider_and_an_unknown_price_is_null() -> None:
    """One priced and one unpriced pair; a foreign field is ignored; cost is None as soon as
    any request of the row had no price (never a made-up 0)."""
    raw: dict[bytes | str, bytes | str] = {}
    for usage in (
        UsageDelta(REF, "novita", 10, 20, 0.002),
        UsageDelta(REF, "novita", 1, 2, 0.001),
        UsageDelta(REF, None, 5, 5, None),
    ):
        for name, delta in usage_fields(usage):
            raw[name.encode()] = str(int(raw.get(name.encode(), b"0")) + delta).encode()
    raw[b"somebody|else"] = b"7"
    assert usage_rows("2026-12-01", raw) == [
        UsageRow("2026-12-01", REF, None, 1, 5, 5, None),
        UsageRow("2026-12-01", REF, "novita", 2, 11, 22, pytest.approx(0.003)),
    ]


@pytest.mark.parametrize(
    ("known", "kept", "limits", "expected"),
    [
        # nothing known, nothing kept: admitted with a spend of 0
        ({}, 0, [100, -1], (None, [0, 0])),
        # the last shared spend alone reaches the daily limit
        ({"d": 100}, 0, [100, -1], (0, [100, 0])),
        # shared 60 plus 40 spent here while degraded reaches it
        ({"d": 60, "m": 500}, 40, [100, 1000], (0, [100, 540])),
        # the monthly limit, listed first, is named first
        ({"d": 10, "m": 1000}, 0, [1000, 100], (0, [1000, 10])),
        # no limit at all is never reached
        ({"d": 10**12}, 0, [-1, -1], (None, [10**12, 0])),
    ],
)
def test_the_degraded_estimate_is_the_last_shared_spend_plus_this_replicas_since(
    known: dict[str, int], kept: int, limits: list[int], expected: tuple[Any, list[int]]
) -> None:
    book = SpendBook()
    for name, spent in known.items():
        book.remember(name, spent)
    book.keep(["d", "m"], [1, 1], [kept, kept], None, [])
    names = ["m", "d"] if limits == [1000, 100] else ["d", "m"]
    assert book.estimate(names, limits) == expected


def test_what_is_kept_while_degraded_is_handed_over_once_and_put_back_after_a_failed_write() -> (
    None
):
    book = SpendBook(max_fields=3)
    book.keep(["d"], [172800], [5], "u", [("f1", 1), ("f2", 2)])
    book.keep(["d"], [172800], [7], "u", [("f1", 1), ("f3", 3), ("f4", 4)])
    assert book.dropped == 1  # f4: the bound of 3 distinct counters was reached
    pending = book.take_pending()
    assert pending.spend == {"d": (12, 172800)}
    assert pending.usage == {"u": {"f1": 2, "f2": 2, "f3": 3}}
    assert not book.take_pending()
    book.keep(["d"], [172800], [1], None, [])
    book.put_back(pending)
    assert book.take_pending().spend == {"d": (13, 172800)}


def test_remembered_spends_are_bounded() -> None:
    book = SpendBook(max_known=2)
    for name in ("a", "b", "c"):
        book.remember(name, 1)
    assert book.estimate(["a", "b", "c"], [-1, -1, -1]) == (None, [0, 1, 1])


@pytest.mark.parametrize(("limit", "nano"), [(None, -1), (0.0, 0), (10.0, 10 * k.NANO)])
def test_limits_travel_as_nano_dollars_with_minus_one_for_none(
    limit: float | None, nano: int
) -> None:
    assert limit_nano(limit) == nano


# -- the mirror, with the real Breaker ----------------------------------------------------------


def test_an_opening_elsewhere_opens_the_model_here_until_the_same_wall_clock_end() -> None:
    clock = FixedClock()
    breaker = Breaker()
    BreakerMirror(breaker, clock=clock).on_open(REF, clock.wall + 7, "503 x2", 2)
    model = parse_ref(REF)
    assert breaker.describe(model, clock.mono) == (State.OPEN, "503 x2", clock.mono + 7)
    assert breaker.state(model, clock.mono + 7) == State.HALF_OPEN


@pytest.mark.parametrize(
    ("local_s", "remote_s", "until_after_s"),
    [
        (None, 5, 5),  # closed here: open until the remote end
        (3, 8, 8),  # open here for less: the longer remote end wins
        (12, 4, 12),  # open here for longer: kept
        (None, -1, None),  # a remote opening that already ended is ignored
    ],
)
def test_the_longer_opening_wins_and_a_past_one_is_ignored(
    local_s: float | None, remote_s: float, until_after_s: float | None
) -> None:
    clock = FixedClock()
    model = parse_ref(REF)
    breaker = Breaker(base_seconds=local_s or 5, max_seconds=60)
    if local_s is not None:
        breaker.fail(model, clock.mono)
    BreakerMirror(breaker, clock=clock).on_open(REF, clock.wall + remote_s, "remote", 1)
    expected = None if until_after_s is None else clock.mono + until_after_s
    assert breaker.cooling_until(model, clock.mono) == expected


def test_a_remote_opening_keeps_the_larger_opening_count_so_the_next_one_doubles() -> None:
    clock = FixedClock()
    model = parse_ref(REF)
    breaker = Breaker(base_seconds=1, max_seconds=60)
    BreakerMirror(breaker, clock=clock).on_open(REF, clock.wall + 4, "remote", 3)
    clock.mono += 5  # half-open; the probe fails: the 4th opening lasts 1 x 2^3 s
    assert breaker.fail(model, clock.mono) == clock.mono + 8


def test_a_closing_elsewhere_closes_the_model_here_and_times_feed_the_hedging_stats() -> None:
    clock = FixedClock()
    model = parse_ref(REF)
    breaker, stats = Breaker(), HedgeStats()
    breaker.fail(model, clock.mono)
    mirror = BreakerMirror(breaker, stats, clock)
    mirror.on_close(REF)
    assert breaker.state(model, clock.mono) == State.CLOSED
    mirror.on_ttft(REF, [0.5, 0.7])
    assert (stats.count(model), stats.p90(model)) == (2, 0.7)
    mirror.on_open("not a ref", clock.wall + 5, "x", 1)  # a foreign ref is ignored
    mirror.on_close("not a ref")
    assert breaker.cooling(clock.mono) == []


# -- local state --------------------------------------------------------------------------------


async def test_local_state_shares_nothing_and_admits_everything() -> None:
    """The default: every answer is the local modules' own."""
    async with LocalState() as local:
        assert local.status() == "local"
        admission = await local.try_spend({"daily": "2026-12-01"}, {"daily": 0.0})
        assert (admission.admitted, admission.source) == (True, "local")
        assert await local.add_spend({"daily": "2026-12-01"}, UsageDelta(REF, None)) is None
        assert await local.usage_totals(["2026-12-01"]) is None


def test_a_gateway_without_state_redis_never_imports_redis() -> None:
    """redis-py is imported only when ``state.redis`` is configured (as uvloop is only where
    it is used), checked in a fresh interpreter."""
    code = (
        "import sys\n"
        "from gateway.shared import open_state, StateSection\n"
        "state = open_state(StateSection())\n"
        "assert state.status() == 'local', state\n"
        "assert not any(m == 'redis' or m.startswith('redis.') for m in sys.modules)\n"
        "shared = open_state(StateSection.model_validate({'redis': {'url': 'redis://h:1'}}))\n"
        "assert type(shared).__name__ == 'RedisState', shared\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- coderclaw usage --shared ------------------------------------------------------------------

_SHARED_ROWS = [
    UsageRow("2026-12-01", "m/a", "together", 3, 30, 6, 0.3),
    UsageRow("2026-12-02", "m/a", "novita", 1, 10, 2, None),
    UsageRow("2026-12-02", "m/b", "together", 5, 50, 10, 0.5),
    UsageRow("2026-12-02", "m/c", None, 1, 1, 1, 0.01),
]


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "model",
            [
                Total("m/b", 5, 50, 10, 0.5),
                Total("m/a", 4, 40, 8, None),
                Total("m/c", 1, 1, 1, 0.01),
            ],
        ),
        (
            "provider",
            [
                Total("together", 8, 80, 16, 0.8),
                Total("-", 1, 1, 1, 0.01),
                Total("novita", 1, 10, 2, None),
            ],
        ),
        ("day", [Total("2026-12-01", 3, 30, 6, 0.3), Total("2026-12-02", 7, 61, 13, None)]),
    ],
)
def test_shared_usage_rows_are_summed_like_the_ledgers_totals(
    by: str, expected: list[Total]
) -> None:
    """Per model / provider (most requests first, ``-`` for none) / day (in order); a group
    with any unpriced part has no cost, never a made-up one."""
    got = shared_groups(_SHARED_ROWS, by)  # type: ignore[arg-type]
    assert [g.key for g in got] == [e.key for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g.requests, g.input_tokens, g.output_tokens) == (
            e.requests,
            e.input_tokens,
            e.output_tokens,
        )
        if e.cost_usd is None:
            assert g.cost_usd is None
        else:
            assert g.cost_usd == pytest.approx(e.cost_usd)


@pytest.mark.parametrize(
    ("start", "now", "days"),
    [
        ("2026-12-01T10:00", "2026-12-01T12:00", ["2026-12-01"]),
        ("2026-11-30T23:00", "2026-12-02T01:00", ["2026-11-30", "2026-12-01", "2026-12-02"]),
        ("2025-01-01T00:00", "2026-12-02T01:00", None),  # longer than the counters live
    ],
)
def test_shared_days_are_the_local_days_asked_at_most_the_counters_lifetime(
    start: str, now: str, days: list[str] | None
) -> None:
    """The local days from ``--since`` to now; never more than the 62 the counters live."""
    ts = [datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() for t in (start, now)]
    got = shared_days(ts[0], ts[1], UTC)
    if days is None:
        assert len(got) == SHARED_MAX_DAYS and got[-1] == "2026-12-02"
    else:
        assert got == days
