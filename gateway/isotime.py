"""ISO 8601 UTC times of epoch seconds, for log lines and ledger rows: ``2026-12-01T19:22:10.123Z``.

The text is ``datetime.fromtimestamp(ts, UTC).isoformat(timespec=...)`` with ``Z`` for
``+00:00``, but the date and time of day are formatted once per second and kept: every
request's log line and ledger row need a time, and ``datetime`` took 2 % of the instructions
of a proxied request.
"""

from __future__ import annotations

import math
import time
from typing import Literal


class _Second:
    """The last whole second formatted, with its text, as one tuple: the log (event loop) and
    the ledger's writer thread both call ``iso_utc``, and a reader must never pair one
    second with another's text (one attribute is read and replaced at once)."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[int, str] = (-1, "")


_LAST = _Second()


def iso_utc(ts: float, digits: Literal[3, 6] = 3) -> str:
    """``ts`` (UTC epoch seconds) with milliseconds (``digits`` 3) or microseconds (6).

    Rounded to the microsecond half to even, then cut to ``digits``, as ``datetime`` does."""
    second = math.floor(ts)
    micro = round((ts - second) * 1e6)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    cached, text = _LAST.entry
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _LAST.entry = (second, text)
    if digits == 3:
        return f"{text}.{micro // 1000:03d}Z"
    return f"{text}.{micro:06d}Z"
