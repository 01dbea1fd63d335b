"""A complete (non-streamed) chat completion → a Response object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import wire
from gateway.dialects.responses.shapes import (
    ChatRequest,
    incomplete_reason,
    message_item,
    new_id,
    reasoning_item,
    reasoning_of,
    response_object,
    split_think,
    tool_item,
    usage_from_chat,
)


def response_from_chat(
    chat: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    request: ChatRequest,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The Response object for a complete (non-streamed) chat completion.

    ``model`` is the ref that served; ``completed_at`` defaults to ``created_at``.
    """
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    reasoning = reasoning_of(message)
    if reasoning is None:
        reasoning, text = split_think(text)
    output: list[dict[str, Any]] = []
    if reasoning:
        output.append(reasoning_item(reasoning))
    calls = message.get("tool_calls")
    if text or not calls:
        output.append(message_item(text))
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        name = name if isinstance(name, str) else ""
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = wire.dumps(arguments).decode() if arguments is not None else ""
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        output.append(
            tool_item(request.tools.get(name), name, call_id or new_id("call"), arguments)
        )
    incomplete = incomplete_reason(finish if isinstance(finish, str) else None)
    if incomplete is not None:
        output[-1]["status"] = "incomplete"
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at,
        model=model,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=usage_from_chat(chat.get("usage")),
        incomplete_reason=incomplete,
        completed_at=None if incomplete else (completed_at or created_at),
    )
