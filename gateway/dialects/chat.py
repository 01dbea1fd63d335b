"""The OpenAI chat completions dialect: ``POST /v1/chat/completions`` over the chain engine.

The request is passed upstream as it is (every OpenAI field untouched, ``model`` set per
attempt); the sink writes the upstream chunks back as ``data: {chunk}`` events, ``data:
[DONE]`` at a clean end, ``data: {"error": {...}}`` and no ``[DONE]`` at a failed one, and
errors as ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import wire
from gateway.app_state import REQUEST_ID, SETTINGS
from gateway.dialects import sse
from gateway.dialects.common import no_token, read_json_object, resolve_requested
from gateway.dialects.handler import chain_for, client_wants_usage, run_engine
from gateway.engine import ChainFailure, ChatRequest, StreamError
from gateway.refs import ModelRef

SSE_DONE = b"data: [DONE]\n\n"


def json_error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-shaped JSON error response."""
    return web.Response(
        status=status,
        body=wire.dumps(wire.error_payload(message, type_, code, param)),
        content_type="application/json",
        headers=headers,
    )


def _usage_only(chunk: dict[str, Any]) -> bool:
    """The ``choices: []`` chunk that carries only the usage (``include_usage``)."""
    return chunk.get("choices") == [] and bool(chunk.get("usage"))


class ChatSink:
    """Renders the engine's events as OpenAI chat completions (JSON or SSE).

    The engine asks the router for usage on every stream; the usage-only chunk reaches the
    client only when it asked for it (``usage``). A ``usage`` the upstream put on another
    chunk (Together, on the finish chunk) is passed on as it came, with its ``cost``."""

    __slots__ = ("_client", "_out", "_usage")

    def __init__(self, client: web.Request, *, usage: bool = True) -> None:
        self._client = client
        self._out: web.StreamResponse | None = None
        self._usage = usage

    async def commit(
        self, served: ModelRef, provider: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        self._out = await sse.open_stream(self._client, headers)
        return self._out

    async def chunks(self, chunks: list[dict[str, Any]]) -> None:
        if not self._usage:
            chunks = [c for c in chunks if not _usage_only(c)]
            if not chunks:
                return
        await self._write(b"".join([b"data: " + wire.dumps(c) + b"\n\n" for c in chunks]))

    async def finish(self) -> None:
        await self._write(SSE_DONE)
        await self._eof()

    async def fail(self, error: StreamError) -> None:
        payload = wire.error_payload(error.message, error.type, error.code)
        await self._write(b"data: " + wire.dumps(payload) + b"\n\n")
        await self._eof()

    def answer(
        self,
        served: ModelRef,
        provider: str | None,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        return web.Response(body=wire.dumps(body), headers=headers, content_type="application/json")

    def error(self, failure: ChainFailure, headers: dict[str, str]) -> web.StreamResponse:
        payload = wire.error_payload(failure.message, failure.type, failure.code, failure.param)
        return web.Response(
            status=failure.status,
            body=wire.dumps(payload),
            headers=headers,
            content_type="application/json",
        )

    def _stream(self) -> web.StreamResponse:
        assert self._out is not None, "the engine commits before it streams"
        return self._out

    async def _eof(self) -> None:
        await sse.end(self._stream())

    async def _write(self, data: bytes) -> None:
        await sse.write(self._stream(), data)


def openai_error(
    request: web.Request, status: int, message: str, code: str, param: str | None = None
) -> web.Response:
    """The OpenAI-shaped error of a request (``common.ErrorRenderer``): ``server_error`` for a
    5xx, else ``invalid_request_error``; with the request's ``x-request-id``."""
    return json_error(
        status,
        message,
        "server_error" if status >= 500 else "invalid_request_error",
        code,
        param,
        headers={"x-request-id": request[REQUEST_ID]},
    )


def _bad_request(request: web.Request, message: str, param: str | None = None) -> web.Response:
    return openai_error(request, 400, message, "invalid_request", param)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS].current
    body = await read_json_object(request, openai_error)
    if not isinstance(body, dict):  # the error answer
        return body
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
    requested = resolve_requested(request, settings, name, openai_error)
    if isinstance(requested, web.Response):
        return requested
    if settings.hf_token is None:
        return no_token(request, settings, openai_error)
    chat = ChatRequest(
        client=request,
        request_id=request[REQUEST_ID],
        dialect="chat",
        settings=settings,
        body=body,
        stream=stream,
        chain=chain_for(settings, requested),
        requested=name,
    )
    return await run_engine(request, chat, ChatSink(request, usage=client_wants_usage(body)))
