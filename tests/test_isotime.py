"""``gateway.isotime.iso_utc``: the text ``datetime`` writes, from a cache of one second."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.isotime import iso_utc


def _datetime_text(ts: float, digits: int) -> str:
    spec = "milliseconds" if digits == 3 else "microseconds"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("ts", "digits", "text"),
    [
        (1_796_133_600.25, 3, "2026-12-01T14:00:00.250Z"),
        (1_796_133_600.25, 6, "2026-12-01T14:00:00.250000Z"),
        (1_796_133_600.0, 6, "2026-12-01T14:00:00.000000Z"),  # datetime would drop the zeros
        (1_796_133_599.9999996, 6, "2026-12-01T14:00:00.000000Z"),  # rounds into the next second
        (1_796_133_599.9999994, 6, "2026-12-01T13:59:59.999999Z"),
        (1_796_133_599.9996, 3, "2026-12-01T13:59:59.999Z"),  # milliseconds are cut, not rounded
        (0.0, 3, "1970-01-01T00:00:00.000Z"),
        (951_782_400.5, 3, "2000-02-29T00:00:00.500Z"),  # a leap day
    ],
)
def test_iso_utc_table(ts: float, digits: int, text: str) -> None:
    assert iso_utc(ts, digits) == text  # type: ignore[arg-type]


def test_the_cached_second_never_leaks_into_another_one() -> None:
    """Times out of order (a row's arrival time after a later log line) each get their own
    second."""
    for ts in (1_796_133_600.5, 1_796_133_601.5, 1_796_133_600.75, 1_796_220_000.0):
        assert iso_utc(ts, 6) == _datetime_text(ts, 6)


@given(st.floats(min_value=0, max_value=4_102_444_800), st.sampled_from([3, 6]))
def test_iso_utc_is_what_datetime_writes(ts: float, digits: int) -> None:
    expected = _datetime_text(ts, digits)
    if digits == 6 and "." not in expected:  # datetime leaves out a zero fraction
        expected = expected[:-1] + ".000000Z"
    assert iso_utc(ts, digits) == expected  # type: ignore[arg-type]
