"""The steps the dialects' HTTP handlers share, each answering in the dialect's own error shape.

A step says what went wrong (a status, a message, OpenAI's ``code`` and ``param``); the
dialect's ``ErrorRenderer`` puts that in its shape: ``{"error": {message, type, param, code}}``
for chat completions and the Responses API, ``{"type": "error", "error": {type, message}}``
for the Anthropic Messages API (which sends no code or param).

    read_json_object   the body within gateway.timeouts: 408, or 400 (not JSON, not an object)
    resolve_requested  the model asked for: None (the chain), its ref, or 404 model_not_found
    no_token           the 503 no_upstream_token of a gateway without a Hugging Face token
    page_limit         a ``limit`` query value from 1 to a most (pure)
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from gateway import wire
from gateway.app_state import SETTINGS
from gateway.errors import RefError
from gateway.refs import ModelRef, is_chain_name, resolve_model
from gateway.request_body import read_body
from gateway.settings import Settings

# What a chat completions or Responses client may name in ``model`` (the Messages API names
# its own: it maps Claude Code's model names too).
MODEL_NAMES = (
    "'coderclaw', an alias, or a ref like huggingface/<org>/<model>[:fastest|:cheapest|:<provider>]"
)


class ErrorRenderer(Protocol):
    """A dialect's error answer for ``request`` (with its ``x-request-id``)."""

    def __call__(
        self,
        request: web.Request,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
    ) -> web.Response: ...


async def read_json_object(
    request: web.Request, error: ErrorRenderer
) -> dict[str, Any] | web.Response:
    """The body as a JSON object, or the error to send instead: 408 ``request_timeout`` (and
    the connection closed) when it does not arrive within ``gateway.timeouts``, 400
    ``invalid_request`` when it is not JSON or not an object. A body past the size limit raises
    ``HTTPRequestEntityTooLarge`` (the front door answers it)."""
    timeouts = request.app[SETTINGS].current.config.gateway.timeouts
    try:
        raw = await read_body(request, idle_s=timeouts.idle_seconds, total_s=timeouts.total_seconds)
    except TimeoutError:
        response = error(
            request,
            408,
            "the request body did not arrive in time (gateway.timeouts.idleSeconds between "
            "bytes, totalSeconds in all); send it again",
            "request_timeout",
        )
        response.force_close()  # Connection: close; aiohttp drops the rest of the body
        return response
    try:
        body = wire.loads(raw)
    except ValueError as exc:
        return error(request, 400, f"the body is not valid JSON: {exc}", "invalid_request")
    if not isinstance(body, dict):
        return error(request, 400, "the body must be a JSON object", "invalid_request")
    return body


def resolve_requested(
    request: web.Request,
    settings: Settings,
    name: str | None,
    error: ErrorRenderer,
    *,
    shown: str | None = None,
    names: str = MODEL_NAMES,
) -> ModelRef | web.Response | None:
    """The model a request asked for: None for the chain (no ``name``, or a chain name), else
    the ref ``name`` resolves to (aliases first); or the 404 ``model_not_found`` that quotes
    ``shown`` (default ``name``: what the client sent) and says what ``names`` may be used."""
    if name is None or is_chain_name(name):
        return None
    try:
        return resolve_model(name, settings.aliases)
    except RefError:
        quoted = name if shown is None else shown
        return error(
            request,
            404,
            f"The model {quoted[:200]!r} does not exist: use {names} (GET /v1/models lists them)",
            "model_not_found",
            "model",
        )


def no_token(request: web.Request, settings: Settings, error: ErrorRenderer) -> web.Response:
    """The 503 ``no_upstream_token`` of a gateway without a Hugging Face token: it says how to
    configure one."""
    return error(
        request,
        503,
        "no Hugging Face token is configured: run `coderclaw onboard` or set HF_TOKEN in "
        f"{settings.paths.env_file}, then restart the gateway",
        "no_upstream_token",
    )


def page_limit(raw: str, most: int) -> int | None:
    """``raw`` (a ``limit`` query value) as a whole number from 1 to ``most``; None when it is
    not one."""
    try:
        limit = int(raw)
    except ValueError:
        return None
    return limit if 1 <= limit <= most else None
