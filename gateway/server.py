"""The HTTP app: thin handlers over ``ChatProxy`` and the catalog; state on typed app keys."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from gateway import guard, wire
from gateway.discovery import CatalogRefresher
from gateway.errors import RefError
from gateway.listing import ListedModel, list_models
from gateway.metrics import Metrics
from gateway.observe import REDACTOR, get_logger
from gateway.openapi import openapi_handler
from gateway.proxy import ChatContext, ChatProxy
from gateway.refs import ModelRef, is_chain_name, parse_ref, resolve_model
from gateway.request_body import read_body
from gateway.routing import Cooldowns, request_chain
from gateway.secret import Secret
from gateway.settings import Settings
from gateway.upstream import Upstream, new_session

log = get_logger("gateway.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class GatewayState:
    """Everything the handlers share. ``settings`` is replaced whole on reload."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    cooldowns: Cooldowns = field(default_factory=Cooldowns)
    session: aiohttp.ClientSession | None = None
    refresher: CatalogRefresher | None = None
    proxy: ChatProxy | None = None
    started: float = field(default_factory=time.time)
    draining: bool = False
    open_streams: int = 0
    # The task of every request being handled: the daemon's drain waits for or cancels them.
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)

    def apply_settings(self, settings: Settings) -> None:
        """Use ``settings`` for every request from now on (config reload)."""
        self.settings = settings
        REDACTOR.set(settings.secrets())
        if self.refresher is not None:
            hf = settings.config.hf
            self.refresher.reconfigure(
                base_url=hf.base_url,
                token=settings.hf_token,
                interval_s=hf.discovery.refresh_minutes * 60,
                timeout_s=hf.discovery.timeout_seconds,
                enabled=hf.discovery.enabled,
            )


STATE = web.AppKey("state", GatewayState)
REQUEST_ID = web.RequestKey("request_id", str)
CORS_HEADERS = web.RequestKey("cors_headers", Mapping[str, str])


def json_error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=wire.dumps(wire.error_payload(message, type_, code, param)),
        content_type="application/json",
        headers=headers,
    )


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


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: an id, a place among the requests in flight (for the drain), the origin
    and Host guards (``gateway.guard``; an allowed origin's preflight is answered here), the
    gateway token on ``/v1/*`` and ``/metrics``, and an OpenAI-shaped JSON body for every
    error the app raises."""
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    state = request.app[STATE]
    task = asyncio.current_task()
    if task is not None:
        state.in_flight.add(task)
    try:
        settings = state.settings
        section = settings.config.gateway
        verdict = guard.check_request(
            guard.build_policy(
                section.allowed_origins, section.allowed_hosts, loopback=settings.is_loopback
            ),
            method=request.method,
            path=request.path,
            headers=request.headers,
            local=_local_address(request),
        )
        if isinstance(verdict, guard.Refused):
            return json_error(
                403,
                verdict.message,
                "permission_error",
                verdict.code,
                headers={"x-request-id": request_id},
            )
        request[CORS_HEADERS] = verdict.headers
        if verdict.preflight:
            return web.Response(status=204, headers={"x-request-id": request_id})
        token = settings.gateway_token
        metrics = request.path == "/metrics" and not section.metrics.public
        if (
            token is not None
            and (request.path.startswith("/v1") or metrics)
            and not _authorized(token, request.headers.get("Authorization", ""))
        ):
            return json_error(
                401,
                "missing or wrong gateway token: send Authorization: Bearer <token> "
                "(gateway.auth.token or CODERCLAW_GATEWAY_TOKEN)"
                + ("; gateway.metrics.public: true opens /metrics" if metrics else ""),
                "authentication_error",
                "invalid_api_key",
                headers={"x-request-id": request_id},
            )
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no route for {request.method} {request.path}; the API is under /v1",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "the request body is larger than gateway.limits.maxBodyBytes",
        }.get(exc.status, exc.reason)
        headers = {"x-request-id": request_id}
        if exc.status == 405 and "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        return json_error(
            exc.status,
            message,
            _STATUS_TYPES.get(exc.status, "invalid_request_error"),
            headers=headers,
        )
    except Exception:
        log.exception("unhandled_error", request_id=request_id, path=request.path)
        return json_error(
            500,
            "internal gateway error; see the gateway log",
            "server_error",
            headers={"x-request-id": request_id},
        )
    finally:
        if task is not None:
            state.in_flight.discard(task)
    if "x-request-id" not in response.headers and not response.prepared:
        response.headers["x-request-id"] = request_id
    return response


def _local_address(request: web.Request) -> tuple[str, int] | None:
    """The address and port this connection came in on (for the gateway's own origin)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


async def _send_cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The CORS headers of an allowed origin, on every answer (streams included)."""
    headers = request.get(CORS_HEADERS) if isinstance(request, web.Request) else None
    for name, value in (headers or {}).items():
        if name == "Vary" and "Vary" in response.headers:
            response.headers["Vary"] = f"{response.headers['Vary']}, {value}"
        else:
            response.headers[name] = value


def _authorized(token: Secret, header: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and token.matches(value.strip())


def _bad_request(request: web.Request, message: str, param: str | None = None) -> web.Response:
    return json_error(
        400,
        message,
        "invalid_request_error",
        "invalid_request",
        param,
        headers={"x-request-id": request[REQUEST_ID]},
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    timeouts = settings.config.gateway.timeouts
    try:
        raw = await read_body(
            request, idle_s=timeouts.idle_seconds, total_s=timeouts.total_seconds
        )
    except TimeoutError:
        response = json_error(
            408,
            "the request body did not arrive in time (gateway.timeouts.idleSeconds between "
            "bytes, totalSeconds in all); send it again",
            "invalid_request_error",
            "request_timeout",
            headers={"x-request-id": request[REQUEST_ID]},
        )
        response.force_close()  # Connection: close; aiohttp drops the rest of the body
        return response
    try:
        body = wire.loads(raw)
    except ValueError as exc:
        return _bad_request(request, f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _bad_request(request, "the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request(request, "'messages' must be a non-empty array", "messages")
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        return _bad_request(request, "'model' must be a string", "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        return _bad_request(request, "'stream' must be a boolean", "stream")
    requested: ModelRef | None = None
    if name is not None and not is_chain_name(name):
        try:
            requested = resolve_model(name, settings.aliases)
        except RefError:
            return json_error(
                404,
                f"The model {name[:200]!r} does not exist: use 'coderclaw', an alias, or a ref "
                "like huggingface/<org>/<model>[:fastest|:cheapest|:<provider>] "
                "(GET /v1/models lists them)",
                "invalid_request_error",
                "model_not_found",
                "model",
                headers={"x-request-id": request[REQUEST_ID]},
            )
    if settings.hf_token is None:
        return json_error(
            503,
            "no Hugging Face token is configured: run `coderclaw onboard` or set HF_TOKEN in "
            f"{settings.paths.env_file}, then restart the gateway",
            "server_error",
            "no_upstream_token",
            headers={"x-request-id": request[REQUEST_ID]},
        )
    ctx = ChatContext(
        request=request,
        request_id=request[REQUEST_ID],
        settings=settings,
        body=body,
        stream=stream,
        chain=request_chain(requested, (settings.chain[0], *settings.fallbacks))
        if requested is not None
        else list(settings.chain),
    )
    assert state.proxy is not None
    if stream:
        state.open_streams += 1
        state.metrics.active_streams.inc()
    try:
        return await state.proxy.complete(ctx)
    finally:
        if stream:
            state.open_streams -= 1
            state.metrics.active_streams.dec()


def _listed(state: GatewayState) -> list[ListedModel]:
    settings = state.settings
    assert state.refresher is not None
    catalog = state.refresher.catalog
    configured = [parse_ref(k) for k in settings.config.agents.defaults.models]
    return list_models(catalog, configured, settings.aliases, settings.chain)


def _model_objects(state: GatewayState) -> list[dict[str, Any]]:
    created = int(state.started)
    out: list[dict[str, Any]] = [
        {
            "id": "coderclaw",
            "object": "model",
            "created": created,
            "owned_by": "coderclaw",
            "chain": [str(r) for r in state.settings.chain],
        }
    ]
    aliases: list[dict[str, Any]] = []
    for item in _listed(state):
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
    data = _model_objects(request.app[STATE])
    return web.Response(
        body=wire.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    raw = unquote(request.match_info["model_id"])
    wanted = raw.strip().lower()
    objects = _model_objects(state)
    for obj in objects:
        if obj["id"].lower() == wanted:
            return web.Response(body=wire.dumps(obj), content_type="application/json")
    try:
        ref = parse_ref(raw)
    except RefError:
        ref = None
    if ref is not None:
        for obj in objects:
            if obj["id"] == str(ref):
                return web.Response(body=wire.dumps(obj), content_type="application/json")
    return json_error(
        404,
        f"The model {raw[:200]!r} does not exist (GET /v1/models lists them)",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness(state: GatewayState) -> list[str]:
    """Reasons the gateway is not ready; empty when it is."""
    problems = []
    if state.draining:
        problems.append("shutting down")
    if state.refresher is None or len(state.refresher.catalog) == 0:
        problems.append("no model catalog")
    if state.settings.hf_token is None:
        problems.append("no Hugging Face token: run `coderclaw onboard`")
    return problems


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    problems = readiness(state)
    catalog = state.refresher.describe() if state.refresher else None
    if problems:
        return web.json_response(
            {"status": "not ready", "reasons": problems, "catalog": catalog}, status=503
        )
    return web.json_response({"status": "ready", "catalog": catalog})


async def metrics_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.proxy is not None:
        state.proxy.flush_logs()  # the counters of requests already answered
    m = state.metrics
    now = time.monotonic()
    m.cooling_models.set(len(state.cooldowns.cooling(now)))
    m.observe_process(state.session.connector if state.session is not None else None)
    if state.refresher is not None:
        m.catalog_models.set(len(state.refresher.catalog))
        age = state.refresher.age_seconds()
        m.catalog_age.set(age if age is not None else -1)
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """The upstream session, the proxy and the catalog refresh task, owned by the app."""
    state = app[STATE]
    own_session = state.session is None
    session = state.session or new_session()
    state.session = session
    state.refresher = CatalogRefresher.from_settings(session, state.settings)
    upstream = Upstream(session)
    state.proxy = ChatProxy(upstream, state.cooldowns, state.metrics)
    state.refresher.start()
    try:
        yield
    finally:
        await state.refresher.stop()
        await upstream.close()
        state.proxy.flush_logs()
        if own_session:
            await session.close()


def make_app(
    settings: Settings, *, session: aiohttp.ClientSession | None = None
) -> web.Application:
    """The gateway as an aiohttp application (the daemon and the tests both run this)."""
    app = web.Application(
        middlewares=[front_door],
        client_max_size=settings.config.gateway.limits.max_body_bytes,
    )
    state = GatewayState(settings=settings, session=session)
    REDACTOR.set(settings.secrets())
    app[STATE] = state
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(_send_cors_headers)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models_handler)
    app.router.add_get("/v1/models/{model_id:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    return app
