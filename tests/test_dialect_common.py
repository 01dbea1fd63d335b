"""The pure step the dialects' handlers share (``gateway.dialects.common``)."""

from __future__ import annotations

import pytest

from gateway.dialects.common import page_limit


@pytest.mark.parametrize(
    ("raw", "most", "limit"),
    [
        ("20", 100, 20),
        ("1", 100, 1),
        ("100", 100, 100),
        ("101", 100, None),
        ("0", 100, None),
        ("-5", 100, None),
        ("abc", 100, None),
        ("", 100, None),
        ("2.5", 100, None),
        ("1000", 1000, 1000),
        ("1001", 1000, None),
    ],
)
def test_page_limit_is_a_whole_number_from_1_to_the_most_else_none(
    raw: str, most: int, limit: int | None
) -> None:
    """A ``limit`` query value counts only as a whole number from 1 to ``most``."""
    assert page_limit(raw, most) == limit
