"""The front door's pure decisions: which Origin and Host a request may carry (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_config
from gateway.errors import ConfigError
from gateway.guard import (
    Allowed,
    Policy,
    Refused,
    allowed_request_headers,
    build_policy,
    check_request,
    host_allowed,
    is_own_origin,
    normalize_origin,
    split_host,
)

LOOPBACK = Policy(check_host=True)
LOCAL = ("127.0.0.1", 18789)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTP://LocalHost:3000", "http://localhost:3000"),
        ("http://localhost:80", "http://localhost"),
        ("https://app.example:443", "https://app.example"),
        ("https://app.example:8443/", "https://app.example:8443"),
        ("http://[::1]:18789", "http://[::1]:18789"),
        ("http://[::FFFF:127.0.0.1]:1", "http://[::ffff:127.0.0.1]:1"),
        ("vscode-webview://abc123", "vscode-webview://abc123"),
        ("chrome-extension://abcdefgh", "chrome-extension://abcdefgh"),
        ("null", None),
        ("", None),
        ("*", None),
        ("localhost:3000", None),
        ("http://localhost:3000/path", None),
        ("http://localhost:3000?x=1", None),
        ("http://user:pw@localhost:3000", None),
        ("http://localhost:99999", None),
        ("http://localhost:abc", None),
        ("http://", None),
        ("http://exa mple.com", None),
        ("http://ex\u00e4mple.com", None),
    ],
)
def test_origins_are_compared_in_their_serialized_form_and_anything_else_is_no_origin(
    raw: str, normalized: str | None
) -> None:
    assert normalize_origin(raw) == normalized


@pytest.mark.parametrize(
    ("host", "parsed"),
    [
        ("localhost", ("localhost", False)),
        ("LOCALHOST:18789", ("localhost", False)),
        ("localhost.:18789", ("localhost", False)),
        ("127.0.0.1", ("127.0.0.1", True)),
        ("127.0.0.1:18789", ("127.0.0.1", True)),
        ("[::1]", ("::1", True)),
        ("[::1]:18789", ("::1", True)),
        ("10.1.2.3:80", ("10.1.2.3", True)),
        ("127.0.0.1.nip.io", ("127.0.0.1.nip.io", False)),
        ("::1", None),  # an IPv6 literal in Host is bracketed
        ("[::1", None),
        ("[::1]x", None),
        ("[evil.example]", None),
        ("localhost:", None),
        ("localhost:99999", None),
        ("localhost:80:80", None),
        ("evil example", None),
        ("evil.example/x", None),
        ("", None),
    ],
)
def test_a_host_header_splits_into_a_name_or_an_ip_literal(
    host: str, parsed: tuple[str, bool] | None
) -> None:
    assert split_host(host) == parsed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:18789", True),
        ("localhost", True),
        ("app.localhost:18789", True),
        ("127.0.0.1:18789", True),
        ("127.0.0.2", True),
        ("[::1]:18789", True),
        ("192.168.1.20:18789", True),  # an IP literal cannot be rebound
        ("host.docker.internal:18789", True),  # in gateway.allowedHosts below
        (None, True),  # HTTP/1.0 without Host: not a browser
        ("", True),
        ("evil.example:18789", False),
        ("attacker.tld", False),
        ("127.0.0.1.nip.io", False),
        ("127.0.0.1.nip.io:18789", False),
        ("localhost.evil.example", False),
        ("localhostx", False),
        ("evillocalhost", False),
        ("docker.internal", False),
        ("[::1", False),
        ("[evil.example]:18789", False),
        ("0x7f.1", False),
    ],
)
def test_on_loopback_only_localhost_ip_literals_and_listed_names_are_answered(
    host: str | None, allowed: bool
) -> None:
    policy = build_policy((), ("host.docker.internal",), loopback=True)
    assert host_allowed(host, policy) is allowed


def test_beyond_loopback_any_host_is_answered_because_a_token_is_required_there() -> None:
    assert host_allowed("evil.example:18789", build_policy((), (), loopback=False))


@pytest.mark.parametrize(
    ("origin", "local", "own"),
    [
        ("http://127.0.0.1:18789", LOCAL, True),
        ("http://localhost:18789", LOCAL, True),
        ("http://app.localhost:18789", LOCAL, True),
        ("http://[::1]:18789", LOCAL, True),
        ("http://[::1]:18789", ("::1", 18789), True),
        ("http://localhost:18789", ("::ffff:127.0.0.1", 18789), True),
        ("http://127.0.0.1:3000", LOCAL, False),  # another port is another server
        ("https://127.0.0.1:18789", LOCAL, False),  # the gateway speaks plain http
        ("http://evil.example:18789", LOCAL, False),
        ("http://localhost.evil.example:18789", LOCAL, False),
        ("http://127.0.0.2:18789", LOCAL, False),
        ("http://192.168.1.20:18789", ("192.168.1.20", 18789), True),
        ("http://localhost:18789", ("192.168.1.20", 18789), False),
        ("http://192.168.1.21:18789", ("192.168.1.20", 18789), False),
        ("http://localhost", ("127.0.0.1", 80), True),
        ("http://localhost:18789", None, False),
    ],
)
def test_the_own_origin_is_http_on_the_port_and_address_the_connection_came_in_on(
    origin: str, local: tuple[str, int] | None, own: bool
) -> None:
    normalized = normalize_origin(origin)
    assert normalized is not None
    assert is_own_origin(normalized, local) is own


def _check(
    origin: str | None,
    *,
    method: str = "POST",
    path: str = "/v1/chat/completions",
    host: str = "127.0.0.1:18789",
    policy: Policy = LOOPBACK,
    **extra: str,
) -> Refused | Allowed:
    headers = {"Host": host, **extra}
    if origin is not None:
        headers["Origin"] = origin
    return check_request(policy, method=method, path=path, headers=headers, local=LOCAL)


@pytest.mark.parametrize(
    ("origin", "path", "verdict"),
    [
        (None, "/v1/chat/completions", "pass"),
        ("http://127.0.0.1:18789", "/v1/chat/completions", "cors"),
        ("http://localhost:18789", "/v1/models", "cors"),
        ("https://evil.example", "/v1/chat/completions", "refused"),
        ("https://evil.example", "/v1/models", "refused"),
        ("https://evil.example", "/metrics", "refused"),
        ("https://evil.example", "/readyz", "refused"),
        ("https://evil.example", "/nope", "refused"),
        ("https://evil.example", "/healthz", "pass"),  # liveness: no CORS headers either
        ("null", "/v1/chat/completions", "refused"),
        ("null", "/healthz", "pass"),
        ("http://127.0.0.1:3000", "/v1/chat/completions", "refused"),
        ("http://localhost:5173", "/v1/chat/completions", "cors"),  # allowed below
        ("HTTP://LOCALHOST:5173", "/v1/chat/completions", "cors"),
        ("http://localhost:5173/", "/v1/chat/completions", "cors"),
        ("garbage", "/v1/chat/completions", "refused"),
    ],
)
def test_an_origin_that_is_neither_own_nor_allowed_is_refused_everywhere_but_healthz(
    origin: str | None, path: str, verdict: str
) -> None:
    policy = build_policy(("http://localhost:5173",), (), loopback=True)
    result = _check(origin, path=path, policy=policy)
    if verdict == "refused":
        assert isinstance(result, Refused)
        assert result.code == "origin_not_allowed"
        assert "gateway.allowedOrigins" in result.message
    else:
        assert isinstance(result, Allowed)
        assert not result.preflight
        if verdict == "pass":
            assert result.headers == {}
        else:
            assert result.headers["Access-Control-Allow-Origin"] == normalize_origin(
                origin or ""
            )
            assert result.headers["Vary"] == "Origin"
            assert "x-request-id" in result.headers["Access-Control-Expose-Headers"]


def test_the_refusal_names_the_origin_to_add_in_its_serialized_form() -> None:
    result = _check("HTTPS://Evil.Example:443")
    assert isinstance(result, Refused)
    assert "'https://evil.example' to gateway.allowedOrigins" in result.message


@pytest.mark.parametrize(
    "host", ["evil.example:18789", "attacker.tld", "127.0.0.1.nip.io", "localhost.evil.example"]
)
def test_a_rebinding_host_is_refused_even_with_an_own_looking_origin_or_on_healthz(
    host: str,
) -> None:
    for origin, path in ((None, "/v1/models"), (f"http://{host}", "/v1/chat/completions"),
                         (None, "/healthz")):
        result = _check(origin, host=host, path=path)
        assert isinstance(result, Refused), (origin, path)
        assert result.code == "host_not_allowed"
        assert "gateway.allowedHosts" in result.message


def test_a_preflight_from_an_allowed_origin_is_answered_with_methods_and_headers() -> None:
    policy = build_policy(("http://localhost:5173",), (), loopback=True)
    result = _check(
        "http://localhost:5173",
        method="OPTIONS",
        policy=policy,
        **{
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key, anthropic-version, "
            "x-stainless-os, x-evil",
        },
    )
    assert isinstance(result, Allowed) and result.preflight
    assert result.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "POST" in result.headers["Access-Control-Allow-Methods"]
    assert result.headers["Access-Control-Allow-Headers"] == (
        "content-type, x-api-key, anthropic-version, x-stainless-os"
    )
    assert result.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in result.headers


def test_a_preflight_from_a_foreign_origin_is_refused_without_any_allow_header() -> None:
    result = _check(
        "https://evil.example", method="OPTIONS", **{"Access-Control-Request-Method": "POST"}
    )
    assert isinstance(result, Refused)


def test_options_without_a_request_method_is_not_a_preflight() -> None:
    result = _check("http://127.0.0.1:18789", method="OPTIONS")
    assert isinstance(result, Allowed) and not result.preflight


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        ("", ""),
        ("Authorization", "authorization"),
        ("authorization,content-type", "authorization, content-type"),
        ("anthropic-beta, ANTHROPIC-VERSION", "anthropic-beta, anthropic-version"),
        ("x-stainless-retry-count", "x-stainless-retry-count"),
        ("cookie, x-forwarded-for", ""),
    ],
)
def test_an_allowed_origin_may_send_the_sdks_headers_and_no_others(
    requested: str, allowed: str
) -> None:
    assert allowed_request_headers(requested) == allowed


@pytest.mark.parametrize(
    ("gateway", "stored"),
    [
        ({"allowedOrigins": ["HTTP://LocalHost:5173/"]}, {"allowed_origins": ("http://localhost:5173",)}),
        ({"allowedOrigins": ["https://app.example:443"]}, {"allowed_origins": ("https://app.example",)}),
        ({"allowedHosts": ["Host.Docker.Internal."]}, {"allowed_hosts": ("host.docker.internal",)}),
        ({"metrics": {"public": True}}, {"metrics.public": True}),
        ({}, {"allowed_origins": (), "allowed_hosts": (), "metrics.public": False}),
    ],
)
def test_the_guard_settings_are_stored_in_the_form_they_are_compared_in(
    gateway: dict[str, Any], stored: dict[str, Any]
) -> None:
    section = validate_config({"gateway": gateway}, "coderclaw.json").gateway
    for key, value in stored.items():
        obj: Any = section
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"allowedOrigins": ["*"]}, "'*' is not an origin; write scheme://host[:port]"),
        ({"allowedOrigins": ["null"]}, "'null' is not an origin"),
        ({"allowedOrigins": ["http://localhost:5173/app"]}, "with no path"),
        ({"allowedOrigins": "http://localhost:5173"}, "expected a list"),
        ({"allowedHosts": ["evil.example:80"]}, "write a name without a port"),
        ({"allowedHosts": ["10.0.0.1"]}, "IP addresses are always answered"),
        ({"allowedHosts": ["a b"]}, "is not a host name"),
        ({"metrics": {"public": "yes"}}, "expected true or false"),
    ],
)
def test_a_wrong_guard_setting_is_a_config_error_that_says_what_to_write(
    gateway: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"gateway": gateway}, "coderclaw.json")
    assert message in str(caught.value)
    assert "gateway." in str(caught.value)
