"""Catalog discovery against the fake router (SPEC §5): fetch, fall back, cache, refresh loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.catalog import Catalog
from gateway.discovery import (
    CatalogRefresher,
    fetch_models,
    initial_catalog,
    load_cached_catalog,
    next_delay,
)
from gateway.errors import UpstreamError
from gateway.secret import Secret
from gateway.settings import load_settings
from tests.fake_router import FakeRouter, ModelsReply

TOKEN = "hf_DiscoveryTokenSecret4242"
NEW_MODEL = "zai-org/GLM-5.3-Flash"  # served by the fake, not in the built-in catalog


def _refresher(
    http: aiohttp.ClientSession,
    base_url: str,
    cache_file: Path,
    *,
    token: Secret | None = None,
    interval_s: float = 3600.0,
    timeout_s: float = 2.0,
    on_update: Callable[[Catalog], None] | None = None,
) -> CatalogRefresher:
    return CatalogRefresher(
        http,
        base_url=base_url,
        token=token,
        interval_s=interval_s,
        timeout_s=timeout_s,
        cache_file=cache_file,
        on_update=on_update,
    )


def _closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def _wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _no_token_anywhere(logs: list[dict[str, Any]], *texts: str) -> None:
    for text in [*(json.dumps(e, default=str) for e in logs), *texts]:
        assert TOKEN not in text
        assert TOKEN[3:] not in text


# ------------------------------------------------------------------------------- fetch_models


async def test_fetch_sends_the_bearer_token_and_merges(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """With a token: GET {baseUrl}/models with `Authorization: Bearer <token>`; merged result."""
    catalog = await fetch_models(http, router.base_url, Secret(TOKEN), 5.0)
    [call] = router.models_calls
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.token == TOKEN
    assert catalog.origin == "discovery"
    assert catalog.fetched_at is not None and abs(catalog.fetched_at - time.time()) < 60
    r1 = catalog.get("deepseek-ai/DeepSeek-R1")
    assert r1 is not None
    assert r1.source == "builtin+discovered"
    assert r1.live_providers == ("novita", "together", "fireworks-ai")
    assert r1.context_window == 163_840, "the built-in figure is kept"
    new = catalog.get(NEW_MODEL)
    assert new is not None and new.source == "discovered"
    assert new.context_window == 204_800, "filled from the providers"
    assert new.cost_input is not None
    assert len(catalog) == len(router.models)


async def test_fetch_without_a_token_sends_no_authorization(
    router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Without a token the list is still asked for, with no Authorization header at all."""
    catalog = await fetch_models(http, router.base_url + "/", None, 5.0)
    [call] = router.models_calls
    assert "Authorization" not in call.headers
    assert call.path == "/v1/models", "a trailing slash on baseUrl does not double it"
    assert catalog.get(NEW_MODEL) is not None


async def _failure(router: FakeRouter, case: str) -> tuple[str, float, Secret | None]:
    """Set the fake up for one failure; returns the base URL, the timeout and the token."""
    if case == "401":
        router.require_auth = True
        router.tokens = {"hf_someOtherValidToken"}
    elif case == "500":
        router.models_reply = ModelsReply(status=500)
    elif case == "invalid-json":
        router.models_reply = ModelsReply(invalid_json=True)
    elif case == "empty-list":
        router.models = []
    elif case == "not-a-list":
        router.models_reply = ModelsReply(body_override={"object": "list", "data": "none"})
    elif case == "hang":
        router.models_reply = ModelsReply(delay=10.0)
        return router.base_url, 0.3, Secret(TOKEN)
    elif case == "refused":
        return _closed_port_url(), 2.0, Secret(TOKEN)
    return router.base_url, 2.0, Secret(TOKEN)


FAILURES = {
    "401": ("the router answered 401", 401),
    "500": ("the router answered 500", 500),
    "invalid-json": ("returned an unusable body", 200),
    "empty-list": ("returned an empty model list", 200),
    "not-a-list": ("returned an unusable body", 200),
    "hang": ("timed out after 0.3s", None),
    "refused": ("failed: ClientConnectorError", None),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_fetch_failures_are_upstream_errors_without_the_token(
    case: str, router: FakeRouter, http: aiohttp.ClientSession
) -> None:
    """Every failure is one UpstreamError with a reason and a hint; no token in its text."""
    base_url, timeout_s, token = await _failure(router, case)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await fetch_models(http, base_url, token, timeout_s)
    elapsed = time.monotonic() - started
    says, status = FAILURES[case]
    assert says in info.value.message
    assert info.value.status == status
    assert elapsed < timeout_s + 1.5, "the configured timeout bounds the request"
    if case == "hang":
        assert elapsed >= 0.3
    if case == "401":
        assert "coderclaw onboard" in str(info.value.hint)
    _no_token_anywhere([], str(info.value), repr(info.value))


# ---------------------------------------------------------------------------- the refresher


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_a_failed_refresh_keeps_the_builtin_catalog(
    case: str, router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Each failure leaves the built-in catalog in place, writes no cache and logs no token."""
    base_url, timeout_s, token = await _failure(router, case)
    cache = tmp_path / "cache" / "huggingface-models.json"
    refresher = _refresher(http, base_url, cache, token=token, timeout_s=timeout_s)
    with capture_logs() as logs:
        assert await refresher.refresh_once() is False
    assert refresher.catalog.origin == "builtin"
    assert len(refresher.catalog) == 10
    assert refresher.failures == 1
    assert refresher.last_error is not None and FAILURES[case][0] in refresher.last_error
    assert not cache.exists()
    assert [e["event"] for e in logs] == ["catalog_refresh_failed"]
    assert logs[0]["kept"] == "builtin"
    _no_token_anywhere(logs, refresher.last_error, json.dumps(refresher.describe()))


async def test_success_writes_the_cache_and_the_next_start_uses_it_when_the_router_is_down(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The last good discovery is saved (0600) and loaded by a new refresher at the next start."""
    cache = tmp_path / "state" / "cache" / "huggingface-models.json"
    first = _refresher(http, router.base_url, cache, token=Secret(TOKEN))
    assert first.catalog.origin == "builtin"
    assert await first.refresh_once() is True
    assert first.catalog.origin == "discovery"
    assert cache.stat().st_mode & 0o777 == 0o600
    assert TOKEN not in cache.read_text()
    assert json.loads(cache.read_text())["version"] == 1

    router.models_reply = ModelsReply(status=503)
    second = _refresher(http, router.base_url, cache, token=Secret(TOKEN))
    assert second.catalog.origin == "cache", "the cache is there before any request"
    assert second.catalog.get(NEW_MODEL) is not None
    assert second.catalog.fetched_at == first.catalog.fetched_at
    with capture_logs() as logs:
        assert await second.refresh_once() is False
    assert second.catalog.origin == "cache"
    assert second.catalog.get(NEW_MODEL) is not None
    assert logs[0]["kept"] == "cache"
    assert [e.model_id for e in second.catalog.entries] == [
        e.model_id for e in first.catalog.entries
    ]


async def test_a_damaged_cache_falls_back_to_the_builtin_catalog(tmp_path: Path) -> None:
    """A cache that is not JSON (or not ours) is ignored with one warning."""
    cache = tmp_path / "huggingface-models.json"
    cache.write_text("{ not json")
    with capture_logs() as logs:
        catalog = initial_catalog(cache)
    assert catalog.origin == "builtin"
    assert [e["event"] for e in logs] == ["catalog_cache_unusable"]
    cache.write_text(json.dumps({"version": 1, "models": [{"model_id": 3}]}))
    assert load_cached_catalog(cache) is None
    assert load_cached_catalog(tmp_path / "absent.json") is None


async def test_a_cache_that_cannot_be_written_is_a_warning(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The refreshed catalog is used even when the cache file cannot be written."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache dir should be")
    refresher = _refresher(http, router.base_url, blocker / "huggingface-models.json")
    with capture_logs() as logs:
        assert await refresher.refresh_once() is True
    assert refresher.catalog.origin == "discovery"
    assert "catalog_cache_write_failed" in [e["event"] for e in logs]


async def test_start_does_not_block_and_the_first_refresh_lands_in_the_background(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """start() returns at once with the built-in catalog; discovery replaces it when it lands."""
    router.models_reply = ModelsReply(delay=0.4)
    updates: list[Catalog] = []
    refresher = _refresher(http, router.base_url, tmp_path / "c.json", on_update=updates.append)
    started = time.monotonic()
    refresher.start()
    assert time.monotonic() - started < 0.1
    assert refresher.running
    assert refresher.catalog.origin == "builtin"
    await _wait_for(lambda: bool(updates))
    assert refresher.catalog.origin == "discovery"
    assert updates == [refresher.catalog]
    await refresher.stop()
    assert not refresher.running


async def test_the_loop_refreshes_on_its_interval_and_stops_cleanly(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With a 0.2 s interval the router is asked again and again; after stop() never again."""
    refresher = _refresher(http, router.base_url, tmp_path / "c.json", interval_s=0.2)
    refresher.start()
    # Counted once a refresh is done: the router's count runs ahead while one is under way.
    await _wait_for(lambda: refresher.refreshes >= 4, timeout=3.0)
    await refresher.stop()
    assert not refresher.running
    assert refresher.refreshes >= 4
    calls = len(router.models_calls)
    gaps = [b.time - a.time for a, b in itertools.pairwise(router.models_calls)]
    assert all(0.15 <= gap < 1.0 for gap in gaps), gaps
    await asyncio.sleep(0.6)
    assert len(router.models_calls) == calls, "no request after stop()"
    await refresher.stop()  # stopping twice is harmless


async def test_stop_during_a_hanging_request_returns_promptly(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """stop() cancels an in-flight discovery instead of waiting for its timeout."""
    router.models_reply = ModelsReply(delay=10.0)
    refresher = _refresher(http, router.base_url, tmp_path / "c.json", timeout_s=30.0)
    refresher.start()
    await _wait_for(lambda: len(router.models_calls) == 1)
    started = time.monotonic()
    await refresher.stop()
    assert time.monotonic() - started < 1.0
    assert refresher.catalog.origin == "builtin"


async def test_failures_are_logged_once_per_streak_and_the_loop_backs_off(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A failure streak is one warning; recovery one info; a new streak warns again."""
    router.models_reply = ModelsReply(status=500)
    refresher = _refresher(
        http, router.base_url, tmp_path / "c.json", token=Secret(TOKEN), interval_s=0.2
    )
    with capture_logs() as logs:
        refresher.start()
        await _wait_for(lambda: refresher.failures >= 4)
        router.models_reply = ModelsReply()
        await _wait_for(lambda: refresher.catalog.origin == "discovery")
        router.models_reply = ModelsReply(status=502)
        await _wait_for(lambda: refresher.failures >= 3)
        await refresher.stop()
    events = [e["event"] for e in logs if e["event"].startswith("catalog_refresh")]
    assert events[:3] == [
        "catalog_refresh_failed",
        "catalog_refresh_recovered",
        "catalog_refreshed",
    ]
    assert events.count("catalog_refresh_failed") == 2
    assert events[-1] == "catalog_refresh_failed"
    failed = [e for e in logs if e["event"] == "catalog_refresh_failed"]
    assert [e["log_level"] for e in failed] == ["warning", "warning"]
    assert "500" in failed[0]["error"] and "502" in failed[1]["error"]
    recovered = next(e for e in logs if e["event"] == "catalog_refresh_recovered")
    assert recovered["failed_tries"] >= 4
    assert refresher.catalog.origin == "discovery", "the last good catalog is kept"
    _no_token_anywhere(logs)


async def test_a_failing_update_callback_does_not_end_the_loop(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An exception in on_update is logged; the loop keeps refreshing."""

    def explode(_: Catalog) -> None:
        raise RuntimeError("listener bug")

    refresher = _refresher(
        http, router.base_url, tmp_path / "c.json", interval_s=0.2, on_update=explode
    )
    with capture_logs() as logs:
        refresher.start()
        # Finished refreshes, not requests seen by the router: a stop during the second
        # request would end it unfinished (flaky under load).
        await _wait_for(lambda: refresher.refreshes >= 2)
        await refresher.stop()
    assert "catalog_update_callback_failed" in [e["event"] for e in logs]
    assert refresher.refreshes >= 2


async def test_reconfigure_wakes_the_loop(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A new router URL or token (config reload) is used at once, not after the interval."""
    async with FakeRouter() as other:
        refresher = _refresher(http, router.base_url, tmp_path / "c.json", interval_s=3600)
        refresher.start()
        await _wait_for(lambda: refresher.refreshes == 1)
        refresher.reconfigure(
            base_url=other.base_url,
            token=Secret(TOKEN),
            interval_s=3600,
            timeout_s=2.0,
            enabled=True,
        )
        await _wait_for(lambda: len(other.models_calls) == 1)
        await refresher.stop()
    assert other.models_calls[0].token == TOKEN
    assert len(router.models_calls) == 1


async def test_a_shorter_interval_from_a_reload_applies_at_once(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """refreshMinutes lowered by a reload: the loop does not sleep out the old hour first."""
    refresher = _refresher(http, router.base_url, tmp_path / "c.json", interval_s=3600)
    refresher.start()
    await _wait_for(lambda: refresher.refreshes == 1)
    refresher.reconfigure(
        base_url=router.base_url, token=None, interval_s=0.2, timeout_s=2.0, enabled=True
    )
    await _wait_for(lambda: refresher.refreshes >= 3, timeout=3.0)
    await refresher.stop()


async def test_disabled_discovery_asks_nothing(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """discovery.enabled false: the loop runs but never calls the router."""
    refresher = CatalogRefresher(
        http,
        base_url=router.base_url,
        token=None,
        interval_s=0.1,
        timeout_s=1.0,
        cache_file=tmp_path / "c.json",
        enabled=False,
    )
    refresher.start()
    await asyncio.sleep(0.35)
    await refresher.stop()
    assert router.models_calls == []
    assert refresher.catalog.origin == "builtin"


async def test_from_settings_uses_the_configured_discovery(
    router: FakeRouter, http: aiohttp.ClientSession, tmp_path: Path, isolated_home: Path
) -> None:
    """baseUrl, refreshMinutes, timeoutSeconds, enabled, the token and the cache path."""
    config = tmp_path / "c.json5"
    config.write_text(
        json.dumps(
            {
                "models": {
                    "providers": {
                        "huggingface": {
                            "baseUrl": router.base_url,
                            "discovery": {"refreshMinutes": 0.5, "timeoutSeconds": 3},
                        }
                    }
                }
            }
        )
    )
    settings = load_settings(
        {"HOME": str(isolated_home), "CODERCLAW_CONFIG_PATH": str(config), "HF_TOKEN": TOKEN}
    )
    refresher = CatalogRefresher.from_settings(http, settings)
    assert (refresher.base_url, refresher.interval_s, refresher.timeout_s) == (
        router.base_url,
        30.0,
        3.0,
    )
    assert refresher.enabled
    assert refresher.cache_file == isolated_home / ".coderclaw/cache/huggingface-models.json"
    assert await refresher.refresh_once()
    assert router.models_calls[0].token == TOKEN


@pytest.mark.parametrize(
    ("interval", "failures", "rand", "expected"),
    [
        (600.0, 0, 0.0, 540.0),
        (600.0, 0, 1.0, 660.0),
        (600.0, 0, 0.5, 600.0),
        (600.0, 1, 1.0, 5.0),
        (600.0, 1, 0.0, 2.5),
        (600.0, 3, 1.0, 20.0),
        (600.0, 20, 1.0, 600.0),
        (0.2, 2, 1.0, 0.2),
    ],
)
def test_next_delay(interval: float, failures: int, rand: float, expected: float) -> None:
    """Interval ±10 % jitter; after failures 5 s doubling (half-jittered), capped at interval."""
    assert next_delay(interval, failures, lambda: rand) == pytest.approx(expected)
