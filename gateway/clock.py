"""The one clock protocol of the gateway (the engine and the shared state read time through it).

``monotonic`` for durations and cooldowns, ``time`` for wall-clock stamps (and the wall-clock
ends of openings shared between machines). Tests pass their own to set time instead of
sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
