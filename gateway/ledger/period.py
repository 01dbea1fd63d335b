"""Calendar arithmetic (pure): local days and months in a time zone, and ``--since`` values.

Every function takes the instant as a UTC epoch (or an aware ``datetime``) and the zone as a
``tzinfo``; nothing reads the clock. Boundaries are computed on the local calendar and then
turned back into instants, so a 23- or 25-hour DST day and a local midnight that does not exist
(a zone that springs forward at 00:00) come out right.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_LOCALTIME = Path("/etc/localtime")


def local_zone(tz_name: str | None = None) -> tzinfo:
    """The zone named ``tz_name`` (a ``TZ`` value, ``:`` prefix allowed), else the machine's.

    The machine's zone is ``/etc/localtime`` (Linux and macOS); UTC when it cannot be read.
    A name that is not a known zone raises ``ValueError`` naming it.
    """
    if tz_name:
        name = tz_name.removeprefix(":")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not a known time zone") from None
    try:
        with _LOCALTIME.open("rb") as f:
            return ZoneInfo.from_file(f, key=_zone_key(_LOCALTIME))
    except (OSError, ValueError):
        return UTC


def _zone_key(path: Path) -> str | None:
    """``Europe/Berlin`` from a ``/etc/localtime -> …/zoneinfo/Europe/Berlin`` link."""
    try:
        target = str(path.resolve())
    except OSError:
        return None
    _, sep, key = target.partition("/zoneinfo/")
    return key if sep else None


def _at_local(day: date, tz: tzinfo) -> datetime:
    """The first instant of local ``day``: midnight, or the first time after a gap there."""
    naive = datetime.combine(day, time(0), tzinfo=tz)
    # A nonexistent midnight (fold=0 takes the offset before the gap) normalises to the
    # instant the clock jumped to; an existing one round-trips unchanged.
    return naive.astimezone(UTC).astimezone(tz)


def local_date(ts: float, tz: tzinfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def day_start(ts: float, tz: tzinfo) -> datetime:
    """The start of the local day holding ``ts``."""
    return _at_local(local_date(ts, tz), tz)


def next_day_start(ts: float, tz: tzinfo) -> datetime:
    """The next local midnight after ``ts`` (when a daily budget resets)."""
    return _at_local(local_date(ts, tz) + timedelta(days=1), tz)


def month_start(ts: float, tz: tzinfo) -> datetime:
    """The start of the local month holding ``ts``."""
    return _at_local(local_date(ts, tz).replace(day=1), tz)


def next_month_start(ts: float, tz: tzinfo) -> datetime:
    """The first instant of the next local month (when a monthly budget resets)."""
    d = local_date(ts, tz)
    first = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
    return _at_local(first, tz)


_AGO = re.compile(r"(\d+)\s*([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float, tz: tzinfo) -> float:
    """The instant (UTC epoch) a ``--since`` value means.

    ``7d``, ``12h``, ``30m``, ``2w``: that long before ``now``. ``today`` / ``month``: the start
    of the local day / month. ``2026-12-01``: local midnight of that date. An ISO date-time
    (``2026-12-01T08:00``, local unless it carries an offset). Anything else → ``ValueError``
    with the accepted forms.
    """
    value = text.strip().lower()
    if value == "today":
        return day_start(now, tz).timestamp()
    if value == "month":
        return month_start(now, tz).timestamp()
    ago = _AGO.fullmatch(value)
    if ago:
        return now - int(ago.group(1)) * _UNIT_SECONDS[ago.group(2)]
    try:
        if len(value) == 10:
            return _at_local(date.fromisoformat(value), tz).timestamp()
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a period: use 7d, 12h, 30m, 2w, today, month, "
            "a date (2026-12-01) or a date-time (2026-12-01T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()
