"""The Anthropic Messages API over the chain engine: routes, the sink, Anthropic's error bodies.

``POST /v1/messages`` (stream and not; ``?beta=true`` accepted) translates the body with
``chat_request`` into one upstream chat request and runs it through the app's engine with a
``MessagesSink``; ``POST /v1/messages/count_tokens`` answers from ``estimate_tokens`` without a
router call; ``HEAD /`` and ``HEAD /api/hello`` (``PROBE_PATHS``, answered by the front door)
are Claude Code's reachability probes.
``models_list`` / ``model_answer`` render ``GET /v1/models`` Anthropic's way (the server
calls them when the request carries ``anthropic-version``).

Every error of these routes is ``{"type": "error", "error": {"type", "message"}}`` with the
status Anthropic uses (``error_json``); the front door renders its own errors on them the
same way (``gateway.server.error_shape_for``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway import wire
from gateway.app_state import REFRESHER, REQUEST_ID, SETTINGS
from gateway.dialects import sse
from gateway.dialects.common import no_token, page_limit, read_json_object, resolve_requested
from gateway.dialects.handler import chain_for, run_engine
from gateway.dialects.messages.errors import error_for_failure, error_response
from gateway.dialects.messages.models import models_page
from gateway.dialects.messages.render import MessagesStream, message_from_chat
from gateway.dialects.messages.request import ChatRequest as MessagesRequest
from gateway.dialects.messages.request import chat_request, clamp_max_tokens
from gateway.dialects.messages.tokens import estimate_tokens
from gateway.engine import ChainFailure, ChatRequest, ClientGone, StreamError
from gateway.errors import DialectError, RefError
from gateway.observe import get_logger
from gateway.refs import ModelRef, parse_ref
from gateway.settings import Settings

log = get_logger("gateway.messages")

# Seconds of silence on a committed stream before a ``ping`` event (Anthropic's keep-alive:
# proxies and clients with read timeouts see the stream is alive while a model thinks).
PING_SECONDS = 15.0
ANTHROPIC_VERSION = "anthropic-version"
DROPPED_TOOLS_HEADER = "x-coderclaw-dropped-tools"
# What a Messages client may name in ``model`` (Claude Code's claude-* names by the map).
_MODEL_NAMES = (
    "'coderclaw', an alias, a ref like huggingface/<org>/<model>, or a name "
    "gateway.anthropic.modelMap maps"
)


def error_json(
    status: int,
    message: str,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An Anthropic-shaped JSON error; ``kind`` defaults to Anthropic's type for ``status``."""
    status, body = error_response(status, message, kind)
    return web.Response(
        status=status,
        body=wire.dumps(body),
        content_type="application/json",
        headers=dict(headers) if headers else None,
    )


class MessagesSink:
    """Renders the engine's events as Anthropic Messages (a JSON message or SSE events).

    On a committed stream a ``ping`` goes out after ``ping_seconds`` without a write; the
    handler calls ``close`` when the engine is done with the sink (whatever happened).
    """

    __slots__ = (
        "_client",
        "_extra",
        "_last_write",
        "_loop",
        "_message_id",
        "_out",
        "_ping_seconds",
        "_pinger",
        "_request",
        "_stream",
    )

    def __init__(
        self,
        client: web.Request,
        request: MessagesRequest,
        message_id: str,
        *,
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        self._client = client
        self._request = request
        self._message_id = message_id
        self._ping_seconds = ping_seconds
        self._stream = MessagesStream(request, message_id)
        self._out: web.StreamResponse | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._last_write = 0.0
        self._extra: dict[str, str] = {}
        if request.dropped_tools:
            self._extra[DROPPED_TOOLS_HEADER] = ",".join(request.dropped_tools)

    async def commit(
        self, served: ModelRef, provider: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        out = await sse.open_stream(self._client, {**headers, **self._extra})
        self._out = out
        await self._write(self._stream.start(str(served)))
        self._pinger = asyncio.create_task(self._ping_during_silence())
        return out

    async def chunks(self, chunks: list[dict[str, Any]]) -> None:
        data = self._stream.feed_all(chunks)
        if data:
            await self._write(data)

    async def finish(self) -> None:
        self.close()
        await self._write(self._stream.finish())
        await sse.end(self._response())

    async def fail(self, error: StreamError) -> None:
        self.close()
        await self._write(self._stream.fail(error.message))
        await sse.end(self._response())

    def answer(
        self,
        served: ModelRef,
        provider: str | None,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        message = message_from_chat(
            body, message_id=self._message_id, model=str(served), request=self._request
        )
        return web.Response(
            body=wire.dumps(message),
            headers={**headers, **self._extra},
            content_type="application/json",
        )

    def error(self, failure: ChainFailure, headers: dict[str, str]) -> web.StreamResponse:
        """Any failure by its status: 429 ``rate_limit_error`` (``Retry-After`` is in
        ``headers``), 401/402/403 with the engine's explanation, an all-503 chain as 529
        ``overloaded_error``, other 5xx ``api_error``, a refused request's 4xx as Anthropic
        names it."""
        status, payload = error_for_failure(failure.status, failure.message)
        return web.Response(
            status=status,
            body=wire.dumps(payload),
            headers={**headers, **self._extra},
            content_type="application/json",
        )

    def close(self) -> None:
        """Stop the pings (idempotent)."""
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None

    def _response(self) -> web.StreamResponse:
        assert self._out is not None, "the engine commits before it streams"
        return self._out

    async def _write(self, data: bytes) -> None:
        self._last_write = self._loop.time()
        await sse.write(self._response(), data)

    async def _ping_during_silence(self) -> None:
        ping = self._stream.ping()
        try:
            while True:
                wait = self._last_write + self._ping_seconds - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    await self._write(ping)
        except (ClientGone, RuntimeError):  # the client left, or the response was closed
            return


# -- handlers -------------------------------------------------------------------------------


def _known(settings: Settings) -> Any:
    aliases = settings.aliases

    def is_known(name: str) -> bool:
        if name in aliases:
            return True
        try:
            parse_ref(name)
        except RefError:
            return False
        return True

    return is_known


def _error(
    request: web.Request, status: int, message: str, code: str, param: str | None = None
) -> web.Response:
    """The Anthropic-shaped error of a request (``common.ErrorRenderer``): the type is
    Anthropic's for ``status``; OpenAI's ``code`` and ``param`` are not part of the shape."""
    return error_json(status, message, headers={"x-request-id": request[REQUEST_ID]})


def _translate(
    request: web.Request, settings: Settings, body: dict[str, Any]
) -> tuple[MessagesRequest, ModelRef | None] | web.Response:
    """The translated request and the model asked for (None: the chain), or an error."""
    try:
        translated = chat_request(
            body, settings.config.gateway.anthropic.model_map, _known(settings)
        )
    except DialectError as exc:
        return _error(request, 400, str(exc), "invalid_request")
    requested = resolve_requested(
        request,
        settings,
        translated.model,
        _error,
        shown=translated.requested_model,
        names=_MODEL_NAMES,
    )
    if isinstance(requested, web.Response):
        return requested
    return translated, requested


def _clamped(body: dict[str, Any], chain: Sequence[ModelRef], app: web.Application) -> Any:
    """The body with ``max_tokens`` no higher than the chain's models accept (the catalog's
    limits; ``clamp_max_tokens``)."""
    requested = body.get("max_tokens")
    if not isinstance(requested, int):
        return body
    catalog = app[REFRESHER].catalog
    entries = [catalog.get(ref.model_id) for ref in chain]
    limits = [(e.max_output, e.context_window) for e in entries if e is not None]
    clamped = clamp_max_tokens(requested, limits)
    return body if clamped == requested else {**body, "max_tokens": clamped}


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: one upstream chat request through the chain."""
    settings = request.app[SETTINGS].current
    body = await read_json_object(request, _error)
    if isinstance(body, web.Response):
        return body
    translated = _translate(request, settings, body)
    if isinstance(translated, web.Response):
        return translated
    wanted, requested = translated
    request_id = request[REQUEST_ID]
    if settings.hf_token is None:
        return no_token(request, settings, _error)
    if wanted.dropped_tools:
        log.info("tools_dropped", request_id=request_id, tools=list(wanted.dropped_tools))
    chain = chain_for(settings, requested)
    body = _clamped(wanted.body, chain, request.app)
    chat = ChatRequest(
        client=request,
        request_id=request_id,
        dialect="messages",
        settings=settings,
        body=body,
        stream=wanted.stream,
        chain=chain,
        requested=wanted.requested_model,
    )
    sink = MessagesSink(request, wanted, f"msg_{request_id}")
    try:
        return await run_engine(request, chat, sink)
    finally:
        sink.close()


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}`` estimated, no router call.

    The body is checked as ``/v1/messages`` checks it (``max_tokens`` may be absent here).
    """
    settings = request.app[SETTINGS].current
    body = await read_json_object(request, _error)
    if isinstance(body, web.Response):
        return body
    checked = {**body, "stream": False}
    checked.setdefault("max_tokens", 1)
    translated = _translate(request, settings, checked)
    if isinstance(translated, web.Response):
        return translated
    return web.Response(
        body=wire.dumps({"input_tokens": estimate_tokens(body)}), content_type="application/json"
    )


# Claude Code's reachability probes, answered 200 by the front door (not routes: a route on
# ``/`` would turn ``GET /`` from 404 into 405).
PROBE_PATHS = frozenset({"/", "/api/hello"})


# -- GET /v1/models, Anthropic's way ---------------------------------------------------------


def wants_anthropic_models(request: web.Request) -> bool:
    """The Anthropic SDKs (and Claude Code) send ``anthropic-version`` on every request."""
    return ANTHROPIC_VERSION in request.headers


def models_list(request: web.Request, objects: Sequence[Mapping[str, Any]]) -> web.Response:
    """One page of the list (``limit`` 1 to 1000, default 20; ``after_id``; ``before_id``)."""
    query = request.query
    raw_limit = query.get("limit", "20")
    limit = page_limit(raw_limit, 1000)
    if limit is None:
        return error_json(
            400,
            f"`limit` must be an integer from 1 to 1000, not {raw_limit[:20]!r}",
            headers={"x-request-id": request[REQUEST_ID]},
        )
    page = models_page(
        objects, limit=limit, after_id=query.get("after_id"), before_id=query.get("before_id")
    )
    return web.Response(body=wire.dumps(page), content_type="application/json")


def model_answer(obj: Mapping[str, Any]) -> web.Response:
    """One model as Anthropic's ``ModelInfo``."""
    (info,) = models_page([obj], limit=1)["data"]
    return web.Response(body=wire.dumps(info), content_type="application/json")


def register(app: web.Application) -> None:
    """The Messages routes (``?beta=true``, which Claude Code adds, is accepted and ignored)."""
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
