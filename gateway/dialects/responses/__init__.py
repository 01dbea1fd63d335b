"""The OpenAI Responses API as a pure translator to and from chat completions (SPEC §10.1).

The gateway always sends chat completions upstream. This package turns a ``POST /v1/responses``
body into one upstream chat body (``chat_request``, in ``request``), a chat completion back into
a Response object (``response_from_chat``, in ``output``), and a stream of chat chunks into
Responses SSE events (``ResponsesStream``, in ``stream``). No I/O here: the engine's sink
drives it.

Decisions a reader should know:
- ``reasoning`` input items are dropped. Providers disagree on echoed reasoning (one rejects
  ``reasoning_content`` on past assistant turns with a 400), most chat templates strip past
  reasoning anyway, and OpenAI's own items carry only ``encrypted_content`` we cannot read.
- ``developer`` and ``system`` items become system messages; consecutive system messages
  (``instructions`` first, then Codex CLI's developer items) are merged into one, and so are
  consecutive text-only user messages, because many chat templates accept a single system
  message only and some insist that roles alternate.
- Tools: ``function`` tools pass as chat functions; a ``custom`` tool becomes a function with
  one string argument ``input`` (its grammar, if any, goes into the description) and its call
  comes back as a ``custom_tool_call``; the function tools of a ``namespace`` group are offered
  as functions under their own name (``<namespace>__<name>`` when two would clash) and their
  calls come back with ``namespace`` set, which Codex CLI needs to route them. Every other
  tool type is hosted (web_search, file_search, computer, code_interpreter, image_generation,
  mcp, local_shell, shell, apply_patch, tool_search…): dropped when merely offered and named
  in ``ChatRequest.dropped_tools``; a ``tool_choice`` that forces one is a ``DialectError``.
- Items that record hosted tool calls (``web_search_call``, ``local_shell_call``…) are dropped
  from the history, since the upstream model was never offered those tools.
"""

from __future__ import annotations

from typing import Any

from gateway import wire
from gateway.dialects.responses.output import response_from_chat
from gateway.dialects.responses.request import chat_request
from gateway.dialects.responses.shapes import ChatRequest, ToolOrigin, new_id
from gateway.dialects.responses.stream import ResponsesStream
from gateway.errors import DialectError

__all__ = [
    "ChatRequest",
    "DialectError",
    "ResponsesStream",
    "ToolOrigin",
    "chat_request",
    "error_body",
    "new_id",
    "response_from_chat",
]


def error_body(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The error body of a Responses request that failed before anything was sent.

    The Responses API answers HTTP errors in the same OpenAI shape as chat completions;
    ``status`` is the HTTP status the body goes with (it is not part of the body).
    """
    del status
    return wire.error_payload(message, type_, code, param)
