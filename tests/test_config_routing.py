"""The config sections of SPEC §9 (``gateway.breaker``, ``gateway.hedge``, ``gateway.rescue``):
defaults, accepted values, and refusals with a message that says what to write."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.config_routing import BreakerSection, HedgeSection, RescueMode


def test_defaults_are_those_of_the_spec() -> None:
    assert BreakerSection() == BreakerSection(base_seconds=5.0, max_seconds=15.0)
    hedge = HedgeSection()
    assert (hedge.after_seconds, hedge.non_stream, hedge.max_fraction) == (None, False, 0.1)


@pytest.mark.parametrize(
    ("data", "base", "maximum"),
    [
        ({}, 5.0, 15.0),
        ({"baseSeconds": 2, "maxSeconds": 30}, 2.0, 30.0),  # JSON5 integers are fine
        ({"baseSeconds": 0.5}, 0.5, 15.0),
        ({"baseSeconds": 15, "maxSeconds": 15}, 15.0, 15.0),
    ],
)
def test_breaker_section_accepts(data: dict[str, Any], base: float, maximum: float) -> None:
    section = BreakerSection.model_validate(data)
    assert (section.base_seconds, section.max_seconds) == (base, maximum)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"baseSeconds": 20}, "maxSeconds (15) must be at least baseSeconds (20)"),
        ({"baseSeconds": 0}, "greater than 0"),
        ({"maxSeconds": -1}, "greater than 0"),
        ({"baseSeconds": "5"}, "valid number"),
        ({"baseSeconds": True}, "valid number"),
        ({"cooldown": 5}, "Extra inputs are not permitted"),
    ],
)
def test_breaker_section_refuses(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        BreakerSection.model_validate(data)


@pytest.mark.parametrize(
    ("data", "after", "non_stream", "fraction"),
    [
        ({}, None, False, 0.1),
        ({"afterSeconds": 2}, 2.0, False, 0.1),
        ({"afterSeconds": 0.25}, 0.25, False, 0.1),
        ({"afterSeconds": False}, False, False, 0.1),
        ({"afterSeconds": None}, None, False, 0.1),
        ({"nonStream": True, "maxFraction": 0.5}, None, True, 0.5),
        ({"maxFraction": 0}, None, False, 0.0),
        ({"maxFraction": 1}, None, False, 1.0),
    ],
)
def test_hedge_section_accepts(
    data: dict[str, Any], after: float | bool | None, non_stream: bool, fraction: float
) -> None:
    section = HedgeSection.model_validate(data)
    assert section.after_seconds == after
    assert type(section.after_seconds) is type(after)  # False stays False, 2 becomes 2.0
    assert (section.non_stream, section.max_fraction) == (non_stream, fraction)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"afterSeconds": 0}, "more than 0, or false to turn hedging off"),
        ({"afterSeconds": 0.0}, "more than 0, or false to turn hedging off"),
        ({"afterSeconds": -2}, "more than 0, or false to turn hedging off"),
        ({"afterSeconds": True}, "valid number"),
        ({"afterSeconds": "5"}, "valid number"),
        ({"maxFraction": 1.5}, "less than or equal to 1"),
        ({"maxFraction": -0.1}, "greater than or equal to 0"),
        ({"nonStream": "yes"}, "valid boolean"),
        ({"after": 2}, "Extra inputs are not permitted"),
    ],
)
def test_hedge_section_refuses(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        HedgeSection.model_validate(data)


class _Gateway(BaseModel):
    """How the lead attaches the sections (the rescue key uses the ``RescueMode`` type)."""

    breaker: BreakerSection = BreakerSection()
    hedge: HedgeSection = HedgeSection()
    rescue: RescueMode = "continue"


@pytest.mark.parametrize(("value", "ok"), [("continue", True), ("off", True), ("on", False)])
def test_rescue_mode(value: str, ok: bool) -> None:
    if ok:
        assert _Gateway.model_validate({"rescue": value}).rescue == value
    else:
        with pytest.raises(ValidationError, match="'continue' or 'off'"):
            _Gateway.model_validate({"rescue": value})
