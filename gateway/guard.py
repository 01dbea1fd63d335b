"""The front door's guards against web pages: foreign origins and DNS-rebinding Host names.

Pure decisions on header values; the ``front_door`` middleware feeds them and writes the answer.

- **Origin**: a browser names the page that made a request in ``Origin`` (on every POST, and on
  every cross-origin fetch). A request whose ``Origin`` is neither the gateway's own nor listed
  in ``gateway.allowedOrigins`` is refused on every route but ``/healthz``: that stops a page
  from spending the user's credits with a "simple" ``text/plain`` or form POST, which a browser
  sends without asking first. ``Origin: null`` (sandboxed frames, ``file:`` pages) is foreign.
  CORS headers are sent only to an allowed origin, never a wildcard.
- **Host**: on a loopback bind the ``Host`` must be ``localhost``, ``*.localhost``, an IP
  literal or a name in ``gateway.allowedHosts``. A DNS-rebinding page points its own name at
  127.0.0.1 and then reads the answers as same-origin; its requests carry that name in ``Host``.
  A request with no ``Host`` at all is not a browser's (browsers always send it) and passes.

Clients that are not browsers send no ``Origin`` and an IP or ``localhost`` Host: unaffected.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

# Methods and request headers an allowed origin may use (the three dialects' SDKs send these).
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
        "openai-organization",
        "openai-project",
        "openai-beta",
        "x-hf-bill-to",
        "x-request-id",
    }
)
CORS_HEADER_PREFIXES = ("x-stainless-",)  # the OpenAI and Anthropic SDKs' client telemetry
CORS_EXPOSE = "x-request-id, x-coderclaw-model, x-coderclaw-attempts, retry-after"
CORS_MAX_AGE = "600"
OPEN_TO_ANY_ORIGIN = frozenset({"/healthz"})

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True, eq=False)
class Policy:
    """What the config allows (``build_policy``, once per config). Hashed by identity
    (``eq=False``): ``host_allowed`` caches by policy, and a generated ``__hash__`` would be
    Python code run on every request."""

    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    check_host: bool = True  # a loopback bind; beyond loopback a gateway token is required


@dataclass(frozen=True)
class Refused:
    """Answer 403 with this message and code."""

    message: str
    code: str


@dataclass(frozen=True)
class Allowed:
    """Go on. ``headers`` are the CORS headers for the answer (empty without an allowed
    ``Origin``); ``preflight`` means answer now with 204 and those headers."""

    headers: Mapping[str, str] = field(default_factory=dict)
    preflight: bool = False


# The verdict on a request without an Origin (most of them), made once.
NO_ORIGIN = Allowed(MappingProxyType({}))


def build_policy(
    allowed_origins: tuple[str, ...], allowed_hosts: tuple[str, ...], *, loopback: bool
) -> Policy:
    """The policy of a config (``Settings.guard_policy`` builds it once per config)."""
    origins = {normalize_origin(o) for o in allowed_origins}
    return Policy(
        allowed_origins=frozenset(o for o in origins if o is not None),
        allowed_hosts=frozenset(normalize_host_name(h) for h in allowed_hosts),
        check_host=loopback,
    )


def normalize_origin(raw: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None when ``raw`` is not
    a serialized origin (``null``, a path, credentials, a bad port)."""
    text = raw.strip()
    if "://" not in text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        not _SCHEME.fullmatch(scheme)
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not parts.hostname
    ):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    elif not _NAME.fullmatch(host.rstrip(".")):
        return None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_host_name(raw: str) -> str:
    """A configured host name as it is compared: lower case, no trailing dot."""
    return raw.strip().lower().rstrip(".")


def split_host(value: str) -> tuple[str, bool] | None:
    """``(name, is_ip_literal)`` of a ``Host`` header value (with or without a port); None when
    it is not a valid host."""
    text = value.strip().lower()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not _valid_port_suffix(rest):
            return None
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return None
        return inside, True
    name, colon, port = text.partition(":")
    if colon and not _valid_port_suffix(colon + port):
        return None
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return name, True
    name = name.rstrip(".")
    if not _NAME.fullmatch(name):
        return None
    return name, False


def _valid_port_suffix(rest: str) -> bool:
    if rest == "":
        return True
    digits = rest[1:]
    return rest[0] == ":" and digits.isascii() and digits.isdigit() and int(digits) <= 65535


@functools.lru_cache(maxsize=256)  # every request asks; clients send a handful of values
def host_allowed(host: str | None, policy: Policy) -> bool:
    """Whether a request with this ``Host`` header may be answered."""
    if not policy.check_host or host is None or host.strip() == "":
        return True
    parsed = split_host(host)
    if parsed is None:
        return False
    name, literal = parsed
    return (
        literal
        or name == "localhost"
        or name.endswith(".localhost")
        or name in policy.allowed_hosts
    )


def is_own_origin(origin: str, local: tuple[str, int] | None) -> bool:
    """Whether the normalized ``origin`` is the gateway's own: ``http://`` and the port the
    connection came in on, with the address it came in on or, when that address is a loopback
    one, ``localhost``, ``*.localhost``, ``127.0.0.1`` or ``[::1]``."""
    if local is None:
        return False
    address, port = local
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    names = {str(ip)}
    if ip.is_loopback:
        names |= {"localhost", "127.0.0.1", "::1"}
    parts = urlsplit(origin)
    host = parts.hostname or ""
    return (
        parts.scheme == "http"
        and (parts.port or 80) == port
        and (host in names or (ip.is_loopback and host.endswith(".localhost")))
    )


def check_request(
    policy: Policy,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    local: tuple[str, int] | None,
) -> Refused | Allowed:
    """The guards' verdict on one request (``headers`` as received; ``local`` the address and
    port the connection came in on)."""
    host = headers.get("Host")
    if not host_allowed(host, policy):
        shown = host if host is not None else ""
        return Refused(
            f"the Host {shown[:100]!r} is refused: this gateway listens on loopback and answers "
            "only to localhost, *.localhost or an IP address (a web page that makes its own "
            "name point at 127.0.0.1 sends that name); use http://127.0.0.1:<port>, or add the "
            "name to gateway.allowedHosts",
            "host_not_allowed",
        )
    raw_origin = headers.get("Origin")
    if raw_origin is None:
        return NO_ORIGIN
    origin = normalize_origin(raw_origin)
    allowed = origin is not None and (
        origin in policy.allowed_origins or is_own_origin(origin, local)
    )
    if not allowed:
        if path in OPEN_TO_ANY_ORIGIN:
            return Allowed()
        shown = raw_origin.strip()[:100]
        return Refused(
            f"requests from the web page origin {shown!r} are refused, so that no page you "
            "visit can use this gateway (and your token); to allow a page you trust, add "
            f"{origin or shown!r} to gateway.allowedOrigins",
            "origin_not_allowed",
        )
    assert origin is not None
    cors = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": CORS_EXPOSE,
        "Vary": "Origin",
    }
    if method == "OPTIONS" and "Access-Control-Request-Method" in headers:
        cors.pop("Access-Control-Expose-Headers")
        cors["Access-Control-Allow-Methods"] = CORS_METHODS
        wanted = allowed_request_headers(headers.get("Access-Control-Request-Headers", ""))
        if wanted:
            cors["Access-Control-Allow-Headers"] = wanted
        cors["Access-Control-Max-Age"] = CORS_MAX_AGE
        return Allowed(cors, preflight=True)
    return Allowed(cors)


def allowed_request_headers(requested: str) -> str:
    """The headers of ``Access-Control-Request-Headers`` that an allowed origin may send."""
    names = [n.strip().lower() for n in requested.split(",")]
    return ", ".join(n for n in names if n in CORS_HEADERS or n.startswith(CORS_HEADER_PREFIXES))
