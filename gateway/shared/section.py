"""The config section of SPEC §13: ``state.redis``.

Kept apart from ``gateway.config`` (``Config`` has it as ``state: StateSection``); the base
mirrors ``config._Section`` (strict, camelCase keys, unknown keys refused). The URL may carry
a password through ``${VAR}``: the config layer substitutes it before this validation, and
the layer logs the URL masked.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from gateway.shared.keys import check_url, masked_url

__all__ = ["RedisSection", "StateSection"]


class _Section(BaseModel):
    # hide_input_in_errors: a validation error must not print the URL as given (it may hold
    # the password); pydantic takes it from the outermost model validated, and
    # config.validate_config never prints a value_error's input either.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        hide_input_in_errors=True,
    )


class RedisSection(_Section):
    """``state.redis``: where the replicas share their state."""

    url: str = Field(repr=False)
    key_prefix: str = Field("coderclaw:", min_length=1, max_length=100, pattern=r"^\S+$")
    timeout_ms: int = Field(50, ge=1, le=5000)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        problem = check_url(value)
        if problem is not None:
            # The message shows the URL masked: a validation error is printed and logged.
            raise ValueError(f"{masked_url(value)}: {problem}")
        return value


class StateSection(_Section):
    """``state``: absent (or ``redis`` absent) keeps every replica's state to itself."""

    redis: RedisSection | None = None
