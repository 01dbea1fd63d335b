"""The config sections of SPEC §9: ``gateway.breaker``, ``gateway.hedge`` and ``gateway.rescue``.

Kept apart from ``gateway.config`` so that module can import them without a cycle; the base
mirrors ``config._Section`` (strict, camelCase keys, unknown keys refused).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from gateway.breaker import DEFAULT_BASE_S, DEFAULT_MAX_S
from gateway.hedging import DEFAULT_MAX_FRACTION
from gateway.rescue import RescueMode

__all__ = ["BreakerSection", "HedgeSection", "RescueMode"]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class BreakerSection(_Section):
    """``gateway.breaker``: how long a failed model is skipped."""

    base_seconds: float = Field(DEFAULT_BASE_S, gt=0, le=3600)
    max_seconds: float = Field(DEFAULT_MAX_S, gt=0, le=3600)

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BreakerSection:
        if self.max_seconds < self.base_seconds:
            raise ValueError(
                f"maxSeconds ({self.max_seconds:g}) must be at least baseSeconds "
                f"({self.base_seconds:g}): raise maxSeconds or lower baseSeconds"
            )
        return self


class HedgeSection(_Section):
    """``gateway.hedge``: ``afterSeconds`` a fixed delay, absent for the adaptive one, ``false``
    for no hedging at all; ``nonStream`` hedges non-stream requests too; ``maxFraction`` bounds
    the share of requests hedged in any minute."""

    after_seconds: Annotated[float, Field(gt=0)] | Literal[False] | None = None
    non_stream: bool = False
    max_fraction: float = Field(DEFAULT_MAX_FRACTION, ge=0, le=1)

    @field_validator("after_seconds", mode="before")
    @classmethod
    def _zero_is_not_false(cls, value: Any) -> Any:
        # Literal[False] alone would take 0 (0 == False): 0 s is no setting, false is "off".
        if not isinstance(value, bool) and isinstance(value, int | float) and value <= 0:
            raise ValueError("afterSeconds must be more than 0, or false to turn hedging off")
        return value
