"""Catalog discovery: fetch ``{baseUrl}/models``, merge with the built-in list, cache, refresh.

``CatalogRefresher`` is the owner of the refresh task: ``start()`` returns at once (the current
catalog is the cached or built-in one until the first discovery lands), ``stop()`` cancels and
awaits the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.catalog import (
    BUILTIN_MODELS,
    Catalog,
    CatalogFormatError,
    builtin_catalog,
    catalog_from_json,
    catalog_to_json,
    merge_catalog,
    parse_models_payload,
)
from gateway.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from gateway.observe import get_logger
from gateway.secret import Secret
from gateway.store import atomic_write
from gateway.upstream import MAX_MODELS_BYTES, fetch

if TYPE_CHECKING:
    import aiohttp

    from gateway.settings import Settings

log = get_logger("gateway.discovery")
_AUTH_HINT = "Hugging Face rejected the token: run `coderclaw onboard` to set a valid one"
_REACH_HINT = "check models.providers.huggingface.baseUrl and the network"


def _status_hint(status: int, has_token: bool) -> str:
    if status in (401, 403):
        return _AUTH_HINT if has_token else "set HF_TOKEN or run `coderclaw onboard`"
    return _REACH_HINT


async def fetch_models(
    session: aiohttp.ClientSession, base_url: str, token: Secret | None, timeout_s: float
) -> Catalog:
    """GET ``{base_url}/models`` and merge it with the built-in list; ``UpstreamError`` on failure.

    The error text never contains the token.
    """
    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token else {}
    try:
        async with fetch.get(session, url, headers=headers, timeout_s=timeout_s) as reply:
            if reply.status != 200:
                raise UpstreamError(
                    f"the router answered {reply.status} to GET {url}",
                    status=reply.status,
                    hint=_status_hint(reply.status, token is not None),
                )
            body = await reply.read(MAX_MODELS_BYTES)
    except UpstreamTimeout:
        raise UpstreamError(
            f"GET {url} timed out after {timeout_s:g}s",
            hint="raise models.providers.huggingface.discovery.timeoutSeconds or " + _REACH_HINT,
        ) from None
    except UpstreamUnreachable as exc:
        raise UpstreamError(f"GET {url} failed: {exc.reason}", hint=_REACH_HINT) from None
    except UpstreamRedirect as exc:
        raise UpstreamError(
            f"GET {url}: {exc.message}", status=exc.status, hint=_REACH_HINT
        ) from None
    except (UpstreamTooLarge, UpstreamBroken) as exc:
        raise UpstreamError(
            f"GET {url} returned an unusable body: {exc.message}", status=200
        ) from None
    try:
        entries = parse_models_payload(json.loads(body))
    except (ValueError, CatalogFormatError) as exc:
        raise UpstreamError(f"GET {url} returned an unusable body: {exc}", status=200) from None
    if not entries:
        raise UpstreamError(f"GET {url} returned an empty model list", status=200)
    return Catalog(merge_catalog(BUILTIN_MODELS, entries), "discovery", time.time())


def load_cached_catalog(path: Path) -> Catalog | None:
    """The last good discovery from disk, or None when absent or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = catalog_from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, CatalogFormatError) as exc:
        log.warning("catalog_cache_unusable", path=str(path), error=str(exc))
        return None
    fetched = data.get("fetched_at")
    return Catalog(
        merge_catalog(BUILTIN_MODELS, entries),
        "cache",
        fetched if isinstance(fetched, int | float) else None,
    )


def save_cached_catalog(path: Path, catalog: Catalog) -> None:
    atomic_write(path, json.dumps(catalog_to_json(catalog)), mode=0o600)


def initial_catalog(cache_file: Path) -> Catalog:
    return load_cached_catalog(cache_file) or builtin_catalog()


def next_delay(
    interval_s: float, failures: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds until the next refresh: the interval ±10 % jitter, or backoff after failures.

    Backoff: 5 s doubling per consecutive failure, never past the interval.
    """
    if failures == 0:
        return interval_s * (0.9 + 0.2 * rand())
    backoff = min(5.0 * 2.0 ** (failures - 1), interval_s)
    return backoff * (0.5 + 0.5 * rand())


class CatalogRefresher:
    """Owns the background refresh task and the current catalog."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: Secret | None,
        interval_s: float,
        timeout_s: float,
        cache_file: Path,
        enabled: bool = True,
        on_update: Callable[[Catalog], None] | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.token = token
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.cache_file = cache_file
        self.enabled = enabled
        self.on_update = on_update
        self.catalog = initial_catalog(cache_file)
        self.failures = 0
        self.last_error: str | None = None
        self.refreshes = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def reconfigure(
        self,
        *,
        base_url: str,
        token: Secret | None,
        interval_s: float,
        timeout_s: float,
        enabled: bool,
    ) -> None:
        """Apply new discovery settings. A new router, token, switch or interval wakes the loop
        (it refreshes at once, then keeps the new interval): a shorter interval must not wait
        for the end of the old one."""
        changed = (base_url, token, enabled, interval_s) != (
            self.base_url,
            self.token,
            self.enabled,
            self.interval_s,
        )
        self.base_url, self.token = base_url, token
        self.interval_s, self.timeout_s, self.enabled = interval_s, timeout_s, enabled
        if changed:
            self._wake.set()

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        on_update: Callable[[Catalog], None] | None = None,
    ) -> CatalogRefresher:
        """A refresher for the configured router, token, interval and cache file."""
        hf = settings.config.hf
        return cls(
            session,
            base_url=hf.base_url,
            token=settings.hf_token,
            interval_s=hf.discovery.refresh_minutes * 60,
            timeout_s=hf.discovery.timeout_seconds,
            cache_file=settings.paths.cache_file,
            enabled=hf.discovery.enabled,
            on_update=on_update,
        )

    def _failed(self, error: str) -> bool:
        """Count a failure; only the first of a streak is logged."""
        self.failures += 1
        self.last_error = error
        if self.failures == 1:
            log.warning(
                "catalog_refresh_failed",
                error=error,
                kept=self.catalog.origin,
                models=len(self.catalog),
            )
        return False

    async def refresh_once(self) -> bool:
        """One discovery; True when it succeeded. Failures keep the last good catalog."""
        try:
            catalog = await fetch_models(self.session, self.base_url, self.token, self.timeout_s)
        except UpstreamError as exc:
            return self._failed(exc.message)
        except Exception as exc:  # an unexpected error must not end the refresh loop
            return self._failed(f"unexpected {type(exc).__name__}")
        if self.failures:
            log.info("catalog_refresh_recovered", failed_tries=self.failures)
        self.failures = 0
        self.last_error = None
        self.refreshes += 1
        self.catalog = catalog
        log.info("catalog_refreshed", models=len(catalog))
        if self.on_update:
            try:
                self.on_update(catalog)
            except Exception:
                log.exception("catalog_update_callback_failed")
        try:
            await asyncio.to_thread(save_cached_catalog, self.cache_file, catalog)
        except OSError as exc:
            log.warning("catalog_cache_write_failed", path=str(self.cache_file), error=exc.strerror)
        return True

    async def _run(self) -> None:
        while True:
            # Cleared before the refresh, so a reconfigure() during it is not lost.
            self._wake.clear()
            if self.enabled:
                await self.refresh_once()
                delay = next_delay(self.interval_s, self.failures)
            else:
                delay = self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def start(self) -> None:
        """Start the loop (first refresh at once, in the background); a no-op when running."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="catalog-refresh")

    async def stop(self) -> None:
        """Cancel the loop and wait for it; no request is made after this returns."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def age_seconds(self, now: float | None = None) -> float | None:
        if self.catalog.fetched_at is None:
            return None
        return (now or time.time()) - self.catalog.fetched_at

    def describe(self) -> dict[str, Any]:
        return {
            "origin": self.catalog.origin,
            "models": len(self.catalog),
            "failures": self.failures,
            "last_error": self.last_error,
        }
