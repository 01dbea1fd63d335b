"""The HTTP app: the front door, thin handlers over the chain engine and the catalog, state on
typed app keys (``app_state``) owned by a ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources as package_files
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from gateway import __version__, guard, wire
from gateway.app_state import (
    BREAKER,
    CLOCK,
    CORS_HEADERS,
    DATABASE,
    ENGINE,
    LEDGER,
    METRICS,
    REFRESHER,
    REQUEST_ID,
    RESPONSES,
    SETTINGS,
    SHARED,
    STARTED,
    TRAFFIC,
    UPSTREAM,
    LiveSettings,
    Traffic,
)
from gateway.breaker import Breaker
from gateway.dialects import responses_http
from gateway.dialects.chat import chat_completions, json_error
from gateway.dialects.messages import http as messages_http
from gateway.discovery import CatalogRefresher
from gateway.engine import ChainEngine, Clock, SystemClock
from gateway.errors import RefError
from gateway.ledger.breaker import load_breaker, save_breaker
from gateway.ledger.db import Database
from gateway.ledger.period import local_zone
from gateway.ledger.responses import ResponseStore
from gateway.ledger.schema import DatabaseUnavailable, db_path
from gateway.ledger.usage import LedgerWriter, UsageRow
from gateway.ledger.usage import recent as recent_rows
from gateway.listing import ListedModel, list_models
from gateway.metrics import Metrics
from gateway.observe import REDACTOR, get_logger
from gateway.openapi import openapi_handler
from gateway.refs import ModelRef, parse_ref
from gateway.routing import KnownRefs
from gateway.secret import Secret
from gateway.settings import Settings
from gateway.shared import BreakerMirror, open_state
from gateway.shared.link import SharedLink
from gateway.status import ChainState, breaker_state, build_status, last_failure
from gateway.upstream import Upstream, new_session

log = get_logger("gateway.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = [
    "REQUEST_ID",
    "begin_drain",
    "error_shape_for",
    "front_door",
    "json_error",
    "make_app",
    "readiness",
]


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


_request_ids = itertools.count(1)
_ID_PREFIX = secrets.token_hex(6)


def new_request_id() -> str:
    """Unique across restarts (a random prefix per process) and cheap (a counter)."""
    return f"{_ID_PREFIX}{next(_request_ids):08x}"


def error_shape_for(path: str, headers: Mapping[str, str]) -> str:
    """``"anthropic"`` for the Messages API's routes (and ``/v1/models*`` asked by an Anthropic
    client, which sends ``anthropic-version``), ``"openai"`` for every other route."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models") and messages_http.ANTHROPIC_VERSION in headers:
        return "anthropic"
    return "openai"


def _error(
    request: web.Request,
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The front door's error in the shape of the route (``error_shape_for``)."""
    if error_shape_for(request.path, request.headers) == "anthropic":
        kind = "permission_error" if status == 403 else None
        return messages_http.error_json(status, message, kind, headers=headers)
    return json_error(status, message, type_, code, param, headers=headers)


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: an id, a place among the requests in flight (for the drain), the origin
    and Host guards (``gateway.guard``; an allowed origin's preflight is answered here), the
    gateway token on ``/v1/*``, ``/metrics`` and ``/status.json`` (``Authorization: Bearer`` or
    ``x-api-key``; the status page's HTML holds no data: it asks for the token and sends it),
    and a JSON body for every error the app raises: Anthropic's shape on the Messages API's
    routes, OpenAI's elsewhere (``error_shape_for``)."""
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    traffic = request.app[TRAFFIC]
    task = asyncio.current_task()
    if task is not None:
        traffic.in_flight.add(task)
    try:
        answered = _admit(request, request_id)
        if answered is not None:
            return answered
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc, request_id)
    except Exception:
        log.exception("unhandled_error", request_id=request_id, path=request.path)
        return _error(
            request,
            500,
            "internal gateway error; see the gateway log",
            "server_error",
            headers={"x-request-id": request_id},
        )
    finally:
        if task is not None:
            traffic.in_flight.discard(task)
    if "x-request-id" not in response.headers and not response.prepared:
        response.headers["x-request-id"] = request_id
    return response


def _admit(request: web.Request, request_id: str) -> web.Response | None:
    """What the front door answers before any route: the guards' 403, an allowed origin's
    preflight, Claude Code's probes, a missing or wrong gateway token's 401. None: the route
    answers (with the allowed origin's CORS headers kept on the request)."""
    settings = request.app[SETTINGS].current
    headers = request.headers
    verdict = guard.check_request(
        settings.guard_policy,
        method=request.method,
        path=request.path,
        headers=headers,
        # Only an Origin is compared with the address the connection came in on.
        local=_local_address(request) if "Origin" in headers else None,
    )
    if isinstance(verdict, guard.Refused):
        return _error(
            request,
            403,
            verdict.message,
            "permission_error",
            verdict.code,
            headers={"x-request-id": request_id},
        )
    request[CORS_HEADERS] = verdict.headers
    if verdict.preflight:
        return web.Response(status=204, headers={"x-request-id": request_id})
    if request.method == "HEAD" and request.path in messages_http.PROBE_PATHS:
        return web.Response(status=200, headers={"x-request-id": request_id})
    return _unauthorized(request, settings, request_id)


def _unauthorized(request: web.Request, settings: Settings, request_id: str) -> web.Response | None:
    """The 401 of a request to ``/v1/*``, ``/metrics`` (unless it is public) or
    ``/status.json`` without the gateway token, when one is configured; None otherwise."""
    token = settings.gateway_token
    metrics = request.path == "/metrics" and not settings.config.gateway.metrics.public
    if (
        token is not None
        and (request.path.startswith("/v1") or metrics or request.path == "/status.json")
        and not _authorized(token, request.headers)
    ):
        return _error(
            request,
            401,
            "missing or wrong gateway token: send "
            + (
                "x-api-key: <token> or "
                if error_shape_for(request.path, request.headers) == "anthropic"
                else ""
            )
            + "Authorization: Bearer <token> (gateway.auth.token or CODERCLAW_GATEWAY_TOKEN)"
            + ("; gateway.metrics.public: true opens /metrics" if metrics else ""),
            "authentication_error",
            "invalid_api_key",
            headers={"x-request-id": request_id},
        )
    return None


def _http_error(request: web.Request, exc: web.HTTPException, request_id: str) -> web.Response:
    """A 4xx/5xx the app raised (no route, wrong method, body too large, ...) as a JSON error
    in the route's shape; a 405 keeps its ``Allow``."""
    message = {
        404: f"no route for {request.method} {request.path}; the API is under /v1",
        405: f"method {request.method} is not allowed on {request.path}",
        413: "the request body is larger than gateway.limits.maxBodyBytes",
    }.get(exc.status, exc.reason)
    headers = {"x-request-id": request_id}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return _error(
        request,
        exc.status,
        message,
        _STATUS_TYPES.get(exc.status, "invalid_request_error"),
        headers=headers,
    )


def _local_address(request: web.Request) -> tuple[str, int] | None:
    """The address and port this connection came in on (for the gateway's own origin)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


async def _send_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The CORS headers of an allowed origin, on every answer (streams included)."""
    headers = request.get(CORS_HEADERS)
    if not headers:
        return
    for name, value in headers.items():
        if name == "Vary" and "Vary" in response.headers:
            response.headers["Vary"] = f"{response.headers['Vary']}, {value}"
        else:
            response.headers[name] = value


def _authorized(token: Secret, headers: Mapping[str, str]) -> bool:
    """``Authorization: Bearer <token>`` or ``x-api-key: <token>`` (the Anthropic SDKs' header),
    each compared in constant time; either matching is enough."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.matches(value.strip()):
        return True
    api_key = headers.get("x-api-key")
    return api_key is not None and token.matches(api_key.strip())


def _listed(app: web.Application) -> list[ListedModel]:
    settings = app[SETTINGS].current
    catalog = app[REFRESHER].catalog
    configured = [parse_ref(k) for k in settings.config.agents.defaults.models]
    return list_models(catalog, configured, settings.aliases, settings.chain)


def _model_objects(app: web.Application) -> list[dict[str, Any]]:
    created = int(app[STARTED])
    out: list[dict[str, Any]] = [
        {
            "id": "coderclaw",
            "object": "model",
            "created": created,
            "owned_by": "coderclaw",
            "chain": [str(r) for r in app[SETTINGS].current.chain],
        }
    ]
    aliases: list[dict[str, Any]] = []
    for item in _listed(app):
        e = item.entry
        obj: dict[str, Any] = {
            "id": str(item.ref),
            "object": "model",
            "created": created,
            "owned_by": item.owner,
            "context_length": e.context_window if e else None,
            "max_output_tokens": e.max_output if e else None,
            "pricing": {"input": e.cost_input, "output": e.cost_output} if e else None,
            "providers": list(e.live_providers) if e else [],
            "aliases": list(item.aliases),
            "source": item.source,
        }
        out.append(obj)
        aliases += [
            {**obj, "id": alias, "owned_by": "coderclaw", "alias_for": str(item.ref)}
            for alias in item.aliases
        ]
    return out + aliases


async def list_models_handler(request: web.Request) -> web.Response:
    data = _model_objects(request.app)
    if messages_http.wants_anthropic_models(request):
        return messages_http.models_list(request, data)
    return web.Response(
        body=wire.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def get_model(request: web.Request) -> web.Response:
    raw = unquote(request.match_info["model_id"])
    wanted = raw.strip().lower()
    objects = _model_objects(request.app)
    found = next((obj for obj in objects if obj["id"].lower() == wanted), None)
    if found is None:
        try:
            ref = parse_ref(raw)
        except RefError:
            ref = None
        if ref is not None:
            found = next((obj for obj in objects if obj["id"] == str(ref)), None)
    if found is not None:
        if messages_http.wants_anthropic_models(request):
            return messages_http.model_answer(found)
        return web.Response(body=wire.dumps(found), content_type="application/json")
    return _error(
        request,
        404,
        f"The model {raw[:200]!r} does not exist (GET /v1/models lists them)",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness(app: web.Application) -> list[str]:
    """Reasons the gateway is not ready; empty when it is."""
    problems = []
    if app[TRAFFIC].draining:
        problems.append("shutting down")
    refresher = app.get(REFRESHER)
    if refresher is None or len(refresher.catalog) == 0:
        problems.append("no model catalog")
    if app[SETTINGS].current.hf_token is None:
        problems.append("no Hugging Face token: run `coderclaw onboard`")
    return problems


async def readyz(request: web.Request) -> web.Response:
    problems = readiness(request.app)
    refresher = request.app.get(REFRESHER)
    catalog = refresher.describe() if refresher else None
    if problems:
        return web.json_response(
            {"status": "not ready", "reasons": problems, "catalog": catalog}, status=503
        )
    return web.json_response({"status": "ready", "catalog": catalog})


async def metrics_handler(request: web.Request) -> web.Response:
    app = request.app
    app[ENGINE].flush_logs()  # the counters of requests already answered
    m = app[METRICS]
    m.observe_breaker(app[BREAKER], app[SETTINGS].current.configured_refs, app[CLOCK].monotonic())
    m.observe_process(app[UPSTREAM].session.connector)
    m.observe_shared_state(app[SHARED].state.status())
    refresher = app[REFRESHER]
    m.catalog_models.set(len(refresher.catalog))
    age = refresher.age_seconds()
    m.catalog_age.set(age if age is not None else -1)
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


STATUS_PAGE = package_files.files("gateway").joinpath("templates/status.html").read_bytes()


async def status_page(request: web.Request) -> web.Response:
    """``GET /`` and ``/status``: the self-contained status page (it polls ``/status.json``)."""
    return web.Response(
        body=STATUS_PAGE,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _chain_state(
    app: web.Application, ref: ModelRef, now: float, recent: list[UsageRow]
) -> ChainState:
    """One chain model's breaker state for the status page."""
    state, reason, until = app[BREAKER].describe(ref, now)
    return breaker_state(ref, state.value, reason, until, now, last_failure(recent, ref))


def status_document(app: web.Application, listen: str) -> dict[str, Any]:
    """The ``/status.json`` document of this gateway now."""
    engine = app[ENGINE]
    engine.flush_logs()  # the requests answered in the last few milliseconds too
    clock = app[CLOCK]
    settings = app[SETTINGS].current
    now, mono = clock.time(), clock.monotonic()
    recent = list(engine.log.recent)
    refresher = app[REFRESHER]
    ledger = app.get(LEDGER)
    return build_status(
        version=__version__,
        uptime_s=now - app[STARTED],
        listen=listen,
        now=now,
        chain=[_chain_state(app, ref, mono, recent) for ref in settings.chain],
        catalog_models=len(refresher.catalog),
        catalog_age_s=refresher.age_seconds(now),
        catalog_error=refresher.last_error,
        recent=recent,
        spent=ledger.spent(now) if ledger is not None else (0.0, 0.0),
        budgets=settings.budgets,
        shared_state=app[SHARED].state.status(),
        replica=app[SHARED].state.replica,
    )


async def status_json(request: web.Request) -> web.Response:
    local = _local_address(request)
    settings = request.app[SETTINGS].current
    host, port = local if local else (settings.host, settings.port)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return web.Response(
        body=wire.dumps(status_document(request.app, listen)),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _storage(app: web.Application) -> AsyncIterator[None]:
    """The state dir's database (ledger rows, stored responses), opened before the first
    request and closed after the last; its writes are batched on its own thread."""
    settings = app[SETTINGS].current
    gw = settings.config.gateway
    clock = app[CLOCK].time
    db = Database(db_path(settings.paths), clock=clock)
    ledger = LedgerWriter(
        db,
        tz=local_zone(gw.budget.time_zone),
        retention_days=gw.usage.retention_days,
        clock=clock,
    )
    app[DATABASE] = db
    app[LEDGER] = ledger
    app[RESPONSES] = ResponseStore(db, retention_hours=gw.responses.retention_hours, clock=clock)
    await db.start()
    await ledger.load_spend(clock())
    try:
        yield
    finally:
        await ledger.drain()
        await db.stop()


async def _shared(app: web.Application) -> AsyncIterator[None]:
    """The state shared with the other replicas (SPEC §13; local alone without
    ``state.redis``): opened before the first request (within its connect timeout; a Redis that
    does not answer leaves it degraded, never the gateway unstarted), fed by the breaker, the
    engine's times to first chunk and the finished requests, closed after the last."""
    live = app[SETTINGS]
    settings = live.current
    clock = app[CLOCK]
    breaker, engine = app[BREAKER], app[ENGINE]
    state = open_state(settings.config.state, clock=clock)
    link = SharedLink(state, clock, local_zone(settings.config.gateway.budget.time_zone))
    app[SHARED] = link
    await state.start(listener=BreakerMirror(breaker, engine.hedge_stats, clock))
    if link.shared:
        state.track_refs([str(ref) for ref in settings.chain])
        breaker.listener = link
        engine.on_ttft = link.ttft
        engine.log.on_finished = link.finished
        live.on_change(lambda new: _reshare(link, new))
        log.info("shared_state_started", replica=state.replica, state=state.status())
    try:
        yield
    finally:
        breaker.listener = None
        engine.on_ttft = None
        engine.log.on_finished = None
        await link.close()
        await state.close()


def _reshare(link: SharedLink, settings: Settings) -> None:
    """A reloaded config: its chain's shared statistics read, its budget zone used (a new
    ``state.redis`` takes a restart)."""
    link.state.track_refs([str(ref) for ref in settings.chain])
    link.tz = local_zone(settings.config.gateway.budget.time_zone)


def begin_drain(app: web.Application) -> None:
    """From now on: not ready, and streams cut by the drain end with an honest error."""
    app[TRAFFIC].draining = True
    engine = app.get(ENGINE)
    if engine is not None:
        engine.draining = True


def _resources(
    session: aiohttp.ClientSession | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context owning the upstream client (and its session unless one was given),
    the catalog refresh task and the chain engine."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        live = app[SETTINGS]
        own_session = session is None
        upstream = Upstream(session or new_session())
        refresher = CatalogRefresher.from_settings(upstream.session, live.current)
        # Metric labels and cooldown entries only for configured and catalog refs.
        known = KnownRefs(lambda: (live.current.configured_refs, refresher.catalog))
        app[METRICS].set_known_refs(known)
        # The breaker's state of the last run, when still current (SPEC §9).
        clock = app[CLOCK]
        breaker = app[BREAKER]
        breaker.restore(await load_breaker(app[DATABASE]), clock.time(), clock.monotonic())
        engine = ChainEngine(upstream, breaker, app[METRICS], clock)
        engine.configure(live.current)
        ledger = app.get(LEDGER)
        engine.log.attach(ledger, lambda: refresher.catalog, app[CLOCK])
        if ledger is not None:  # the status page's last requests survive a restart
            with contextlib.suppress(DatabaseUnavailable):
                engine.log.recent.extend(reversed(await app[DATABASE].read(recent_rows)))
        app[UPSTREAM] = upstream
        app[REFRESHER] = refresher
        app[ENGINE] = engine
        live.on_change(lambda settings: _reconfigure(refresher, settings))
        live.on_change(engine.configure)
        refresher.start()
        try:
            yield
        finally:
            await refresher.stop()
            await upstream.close()
            engine.flush_logs()
            save_breaker(app[DATABASE], breaker.snapshot(clock.time(), clock.monotonic()))
            if own_session:
                await upstream.session.close()

    return resources


def _reconfigure(refresher: CatalogRefresher, settings: Settings) -> None:
    hf = settings.config.hf
    refresher.reconfigure(
        base_url=hf.base_url,
        token=settings.hf_token,
        interval_s=hf.discovery.refresh_minutes * 60,
        timeout_s=hf.discovery.timeout_seconds,
        enabled=hf.discovery.enabled,
    )


def make_app(
    settings: Settings,
    *,
    session: aiohttp.ClientSession | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The gateway as an aiohttp application (the daemon and the tests both run this)."""
    app = web.Application(
        middlewares=[front_door],
        client_max_size=settings.config.gateway.limits.max_body_bytes,
    )
    clock = clock or SystemClock()
    live = LiveSettings(settings)
    REDACTOR.set(settings.secrets())
    live.on_change(lambda new: REDACTOR.set(new.secrets()))
    app[SETTINGS] = live
    app[METRICS] = Metrics()
    gw = settings.config.gateway
    app[BREAKER] = Breaker(
        gw.breaker.base_seconds,
        gw.breaker.max_seconds,
        configured=settings.configured_refs,
        probe_timeout=gw.timeouts.total_seconds,
    )
    app[TRAFFIC] = Traffic()
    app[CLOCK] = clock
    app[STARTED] = clock.time()
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_resources(session))
    app.cleanup_ctx.append(_shared)
    app.on_response_prepare.append(_send_cors_headers)
    app.router.add_post("/v1/chat/completions", chat_completions)
    responses_http.register(app)  # /v1/responses and the stored responses
    app.router.add_get("/v1/models", list_models_handler)
    app.router.add_get("/v1/models/{model_id:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    messages_http.register(app)  # /v1/messages, /v1/messages/count_tokens
    # The status page (issue 14): the HTML is open, its data needs the gateway token.
    app.router.add_get("/", status_page)
    app.router.add_get("/status", status_page)
    app.router.add_get("/status.json", status_json)
    return app
