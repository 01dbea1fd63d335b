"""The config sections of the ledger, the budgets and the Responses store.

They belong under ``gateway`` in the config file (``gateway.usage``, ``gateway.budget``,
``gateway.responses``). The base repeats ``gateway.config._Section``'s settings instead of
importing it, so ``gateway.config`` can import these classes without an import cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from gateway.ledger.period import local_zone


class _LedgerSection(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class UsageConfig(_LedgerSection):
    """``gateway.usage``: how long ledger rows are kept."""

    retention_days: int = Field(90, ge=1, le=3660)


class BudgetConfig(_LedgerSection):
    """``gateway.budget``: optional spend limits in USD per local day / month."""

    daily_usd: float | None = Field(None, gt=0)
    monthly_usd: float | None = Field(None, gt=0)
    time_zone: str | None = None  # an IANA name like "Europe/Berlin"; None = the machine's

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            local_zone(value)  # raises ValueError naming the zone
        return value


class ResponsesConfig(_LedgerSection):
    """``gateway.responses``: how long stored Responses API responses are kept."""

    retention_hours: float = Field(168.0, gt=0)
