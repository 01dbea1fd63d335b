"""The OpenAI Responses API on the wire: ``/v1/responses`` over the chain engine (SPEC §10.1).

The pure translator (``gateway.dialects.responses``) turns the body into one upstream chat
request and the engine's chunks into Responses events; this module does the I/O around it:
the body read, the stored history of ``previous_response_id``, the sink that writes the events
(or the JSON Response) and keeps the finished response in the store, and the store's routes.

    POST   /v1/responses                      create (stream or not)
    GET    /v1/responses/{id}                 a stored response
    GET    /v1/responses/{id}/input_items     its input items (after, limit, order)
    DELETE /v1/responses/{id}                 {id, object: "response", deleted: true}

A response is stored once it finished (completed or incomplete), before its last byte is sent,
so a client that continues at once finds it; a response that failed after commit is not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from gateway import wire
from gateway.app_state import CLOCK, REQUEST_ID, RESPONSES, SETTINGS
from gateway.dialects import responses as dialect
from gateway.dialects import sse
from gateway.dialects.chat import json_error, openai_error
from gateway.dialects.common import no_token, page_limit, read_json_object, resolve_requested
from gateway.dialects.handler import chain_for, run_engine
from gateway.engine import ChainFailure, ChatRequest, StreamError
from gateway.errors import DialectError
from gateway.ledger.responses import ResponseStore
from gateway.ledger.schema import DatabaseUnavailable
from gateway.observe import get_logger
from gateway.refs import ModelRef

log = get_logger("gateway.responses")

_ORDERS = ("asc", "desc")


class ResponsesSink:
    """Renders the engine's events as one Response: SSE events, or a JSON object; keeps the
    finished response in ``store`` (None: ``store: false``)."""

    __slots__ = ("_client", "_clock", "_out", "_request", "_store", "_stream", "response_id")

    def __init__(
        self,
        client: web.Request,
        request: dialect.ChatRequest,
        *,
        store: ResponseStore | None,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._request = request
        self._store = store
        self._clock = clock
        self._out: web.StreamResponse | None = None
        self.response_id = dialect.new_id("resp")
        self._stream = dialect.ResponsesStream(
            request, response_id=self.response_id, created_at=int(clock())
        )

    async def commit(
        self, served: ModelRef, provider: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        out = await sse.open_stream(self._client, {**headers, **self._request.headers()})
        self._out = out
        await self._write(self._stream.start(str(served)))
        return out

    async def chunks(self, chunks: list[dict[str, Any]]) -> None:
        feed = self._stream.feed
        data = b"".join([feed(chunk) for chunk in chunks])
        if data:
            await self._write(data)

    async def finish(self) -> None:
        data = self._stream.finish(int(self._clock()))
        self._keep(self._stream.response)  # before the last event: the next turn may follow at once
        await self._write(data)
        await self._eof()

    async def fail(self, error: StreamError) -> None:
        await self._write(self._stream.fail(error.message, error.code))
        await self._eof()

    def answer(
        self,
        served: ModelRef,
        provider: str | None,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = dialect.response_from_chat(
            body,
            response_id=self.response_id,
            created_at=self._stream.created_at,
            model=str(served),
            request=self._request,
            completed_at=int(self._clock()),
        )
        self._keep(response)
        return web.Response(
            body=wire.dumps(response),
            headers={**headers, **self._request.headers()},
            content_type="application/json",
        )

    def error(self, failure: ChainFailure, headers: dict[str, str]) -> web.StreamResponse:
        body = dialect.error_body(
            failure.status, failure.message, failure.type, failure.code, failure.param
        )
        return web.Response(
            status=failure.status,
            body=wire.dumps(body),
            headers={**headers, **self._request.headers()},
            content_type="application/json",
        )

    def _keep(self, response: dict[str, Any]) -> None:
        if self._store is not None:
            self._store.store(
                self.response_id,
                float(response["created_at"]),
                self._request.input_items,
                response["output"],
                response,
                self._request.previous_response_id,
            )

    async def _write(self, data: bytes) -> None:
        assert self._out is not None, "the engine commits before it streams"
        await sse.write(self._out, data)

    async def _eof(self) -> None:
        assert self._out is not None, "the engine commits before it streams"
        await sse.end(self._out)


# ------------------------------------------------------------------------------ errors


def _error(
    request: web.Request,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> web.Response:
    return json_error(
        status, message, type_, code, param, headers={"x-request-id": request[REQUEST_ID]}
    )


def _not_found(request: web.Request, response_id: str, param: str | None = None) -> web.Response:
    return _error(
        request,
        404,
        f"Response with id {response_id[:200]!r} not found: it was never stored (store: false), "
        "was deleted, or is older than gateway.responses.retentionHours.",
        code="previous_response_not_found" if param else "not_found",
        param=param,
    )


def _unavailable(request: web.Request, exc: DatabaseUnavailable) -> web.Response:
    return _error(
        request,
        503,
        f"{exc.message}; {exc.hint}" if exc.hint else exc.message,
        "server_error",
        "database_unavailable",
    )


# ----------------------------------------------------------------------------- handlers


async def create_response(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: translate, run through the chain, render (and store)."""
    body = await read_json_object(request, openai_error)
    if isinstance(body, web.Response):
        return body
    store = request.app[RESPONSES]
    history = None
    previous = body.get("previous_response_id")
    if isinstance(previous, str):
        try:
            history = await store.history(previous)
        except DatabaseUnavailable as exc:
            return _unavailable(request, exc)
        if history is None:
            return _not_found(request, previous, "previous_response_id")
    try:
        translated = dialect.chat_request(body, history)
    except DialectError as exc:
        return _error(
            request, 400, exc.message, code=exc.code or "invalid_request", param=exc.param
        )
    settings = request.app[SETTINGS].current
    name = translated.model
    requested = resolve_requested(request, settings, name, openai_error)
    if isinstance(requested, web.Response):
        return requested
    if settings.hf_token is None:
        return no_token(request, settings, openai_error)
    if translated.dropped_tools:
        log.info(
            "responses_tools_dropped",
            request_id=request[REQUEST_ID],
            tools=list(translated.dropped_tools),
        )
    chat = ChatRequest(
        client=request,
        request_id=request[REQUEST_ID],
        dialect="responses",
        settings=settings,
        body=translated.body,
        stream=translated.stream,
        chain=chain_for(settings, requested),
        requested=name,
    )
    sink = ResponsesSink(
        request,
        translated,
        store=store if translated.store else None,
        clock=request.app[CLOCK].time,
    )
    return await run_engine(request, chat, sink)


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{response_id}``: the stored Response object."""
    response_id = request.match_info["response_id"]
    try:
        found = await request.app[RESPONSES].get(response_id)
    except DatabaseUnavailable as exc:
        return _unavailable(request, exc)
    if found is None:
        return _not_found(request, response_id)
    return web.Response(body=wire.dumps(found), content_type="application/json")


async def list_input_items(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{response_id}/input_items``: one page (``after``, ``limit`` 1 to 100,
    default 20, ``order`` asc or desc, default desc)."""
    response_id = request.match_info["response_id"]
    query = request.query
    raw_limit = query.get("limit", "20")
    limit = page_limit(raw_limit, 100)
    if limit is None:
        return _error(
            request,
            400,
            f"'limit' must be an integer from 1 to 100, not {raw_limit[:50]!r}",
            code="invalid_request",
            param="limit",
        )
    order = query.get("order", "desc")
    if order not in _ORDERS:
        return _error(
            request,
            400,
            f"'order' must be asc or desc, not {order[:50]!r}",
            code="invalid_request",
            param="order",
        )
    sort: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    try:
        page = await request.app[RESPONSES].input_items(
            response_id, after=query.get("after"), limit=limit, order=sort
        )
    except DatabaseUnavailable as exc:
        return _unavailable(request, exc)
    except ValueError as exc:
        return _error(request, 400, f"'after': {exc}", code="invalid_request", param="after")
    if page is None:
        return _not_found(request, response_id)
    return web.Response(body=wire.dumps(page.as_json()), content_type="application/json")


async def delete_response(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/responses/{response_id}``: OpenAI's deletion object."""
    response_id = request.match_info["response_id"]
    try:
        deleted = await request.app[RESPONSES].delete(response_id)
    except DatabaseUnavailable as exc:
        return _unavailable(request, exc)
    if not deleted:
        return _not_found(request, response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return web.Response(body=wire.dumps(body), content_type="application/json")


def register(app: web.Application) -> None:
    """Add the Responses API routes to ``app``."""
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", retrieve_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", list_input_items)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
