"""The shared state's names and values in Redis (pure): key names, TTLs, the breaker events on
the channel, money as integers, and the URL as it may be logged.

Every key the layer writes is named here, and every one of them has a TTL:

    {prefix}breaker:{ref}               an open model: JSON of its opening, expires at its end
                                        plus ``BREAKER_MARGIN_S``; deleted when it closes
    {prefix}events                      the pub/sub channel of openings and closings (no key)
    {prefix}spend:{period}:{key}        the spend of one budget period in nano-USD (an integer:
                                        sums across replicas are exact); daily 2 days, monthly
                                        62 days after its last write
    {prefix}usage:{day}                 a hash of counters per model and provider for one day
                                        (``{model}|{provider}|{metric}``), 62 days
    {prefix}ttft:{ref}                  a stream of the last ~``TTFT_WINDOW`` times to first
                                        chunk, each tagged with its replica, 1 day
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

DAY_S = 86400
PERIOD_TTL_S = {"daily": 2 * DAY_S, "monthly": 62 * DAY_S}
USAGE_TTL_S = 62 * DAY_S
TTFT_TTL_S = DAY_S
TTFT_WINDOW = 200
# An opening's key outlives its end a little, so a replica that joins just after the end still
# learns of it (it comes back half-open there: the first request probes it).
BREAKER_MARGIN_S = 30.0
NANO = 1_000_000_000
USAGE_METRICS = ("requests", "input_tokens", "output_tokens", "cost_nusd", "unpriced")
SCHEMES = ("redis", "rediss", "unix")

Status = Literal["redis", "degraded", "local"]


def breaker_key(prefix: str, ref: str) -> str:
    return f"{prefix}breaker:{ref}"


def events_channel(prefix: str) -> str:
    return f"{prefix}events"


def spend_key(prefix: str, period: str, key: str) -> str:
    return f"{prefix}spend:{period}:{key}"


def usage_key(prefix: str, day: str) -> str:
    return f"{prefix}usage:{day}"


def ttft_key(prefix: str, ref: str) -> str:
    return f"{prefix}ttft:{ref}"


def period_ttl(period: str) -> int:
    """Seconds a spend key lives after its last write: 2 days for ``daily``, 62 for
    ``monthly`` (the period itself and a margin for clock skew between replicas)."""
    return PERIOD_TTL_S.get(period, PERIOD_TTL_S["monthly"])


def breaker_ttl_ms(until_wall: float, now_wall: float) -> int:
    """Milliseconds an opening's key lives: to the end of the open time, plus the margin."""
    # rounded first: (0.2 + 30) * 1000 is 30200.000000000004 in floats
    return max(math.ceil(round((until_wall - now_wall + BREAKER_MARGIN_S) * 1000, 6)), 1)


def glob_escape(text: str) -> str:
    """``text`` as a literal in a ``SCAN MATCH`` pattern (a prefix may hold ``*?[]\\``)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def to_nano(usd: float) -> int:
    """USD as whole nano-dollars (a request of 100 tokens at $0.10/M is 10 000)."""
    return round(usd * NANO) if math.isfinite(usd) and usd > 0 else 0


def from_nano(nano: int | float) -> float:
    return float(nano) / NANO


def usage_field(model: str, provider: str | None, metric: str) -> str:
    return f"{model}|{provider or ''}|{metric}"


def split_usage_field(field: str) -> tuple[str, str | None, str] | None:
    """``(model, provider, metric)`` of a usage hash field; None for one not ours."""
    parts = field.rsplit("|", 2)
    if len(parts) != 3 or parts[2] not in USAGE_METRICS or not parts[0]:
        return None
    return parts[0], parts[1] or None, parts[2]


# -- breaker events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opening:
    """One replica opened ``ref`` until ``until_wall`` (wall-clock seconds)."""

    ref: str
    until_wall: float
    since_wall: float
    reason: str
    openings: int
    replica: str


@dataclass(frozen=True, slots=True)
class Closing:
    """One replica's probe of ``ref`` succeeded: it is closed."""

    ref: str
    replica: str


def encode_opening(opening: Opening) -> bytes:
    return orjson.dumps(
        {
            "kind": "open",
            "ref": opening.ref,
            "until": opening.until_wall,
            "since": opening.since_wall,
            "reason": opening.reason,
            "openings": opening.openings,
            "replica": opening.replica,
        }
    )


def encode_closing(closing: Closing) -> bytes:
    return orjson.dumps({"kind": "close", "ref": closing.ref, "replica": closing.replica})


def decode_event(data: bytes | str) -> Opening | Closing | None:
    """The event in a channel message or a breaker key's value; None for anything malformed
    (another program may write to the same Redis)."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    ref, replica = raw.get("ref"), raw.get("replica")
    if not (isinstance(ref, str) and ref and isinstance(replica, str)):
        return None
    if raw.get("kind") == "close":
        return Closing(ref, replica)
    if raw.get("kind") != "open":
        return None
    until: Any = raw.get("until")
    since: Any = raw.get("since")
    openings, reason = raw.get("openings", 1), raw.get("reason", "")
    if not all(_finite(v) for v in (until, since)) or not isinstance(reason, str):
        return None
    if isinstance(openings, bool) or not isinstance(openings, int) or openings < 1:
        return None
    return Opening(ref, float(until), float(since), reason[:200], openings, replica)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- the URL ----------------------------------------------------------------------------------


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a Redis URL, or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in SCHEMES:
        return "expected a redis://, rediss:// (TLS) or unix:// URL"
    if parts.scheme != "unix" and not parts.hostname:
        return "the URL names no host"
    return None


def masked_url(url: str) -> str:
    """``url`` safe to log: the password (and any ``password=`` query value) as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"{userinfo}@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    # Built by hand: urlunsplit drops the "//" of an empty host (unix:///run/redis.sock).
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return text + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redis_password(url: str) -> str:
    """The password in a Redis URL (``redis://:pw@host``, or a ``password=`` query value):
    the two forms ``masked_url`` hides."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.password:
        return unquote(parts.password)
    query = parse_qs(parts.query).get("password")
    return query[0] if query else ""


def retry_delays(first: float, cap: float) -> Iterator[float]:
    """The waits between reconnect attempts: ``first``, doubling, at most ``cap``, for ever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)
