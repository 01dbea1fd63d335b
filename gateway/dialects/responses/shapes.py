"""The Responses objects the dialect builds, and what every part of it shares.

``ChatRequest`` is a translated request; ``ToolOrigin`` maps a chat function name back to its
Responses tool; the item builders and ``response_object`` give the shapes the openai SDK's
``Response`` model requires (checked in the tests with the SDK's own types).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import wire

THINK_OPEN = "<think>"

THINK_CLOSE = "</think>"

_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True)
class ToolOrigin:
    """What a chat function name stands for in the Responses request."""

    kind: str  # "function" or "custom"
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """One Responses request translated: the upstream chat body and what the answer needs.

    ``body`` is a chat completions body with ``model`` set to the requested name (the engine
    replaces it per attempt). ``input_items`` are this request's input items with ids, for the
    store; ``echo`` the request fields a Response object repeats; ``tools`` maps each chat
    function name back to its Responses tool.
    """

    body: dict[str, Any]
    stream: bool
    model: str | None
    input_items: list[dict[str, Any]]
    dropped_tools: tuple[str, ...] = ()
    store: bool = True
    previous_response_id: str | None = None
    wants_usage: bool = True  # a Response always carries usage
    echo: dict[str, Any] = field(default_factory=dict)
    tools: Mapping[str, ToolOrigin] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        """The dialect's own response headers (``x-coderclaw-dropped-tools``)."""
        if not self.dropped_tools:
            return {}
        return {"x-coderclaw-dropped-tools": ",".join(self.dropped_tools)}


def new_id(prefix: str) -> str:
    """An OpenAI-looking item id: ``<prefix>_`` and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def split_think(content: str) -> tuple[str | None, str]:
    """(reasoning, text) of content that may open with inline ``<think>…</think>``."""
    stripped = content.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, content
    rest = stripped[len(THINK_OPEN) :]
    end = rest.find(THINK_CLOSE)
    if end < 0:
        return rest, ""  # cut off while thinking
    return rest[:end], rest[end + len(THINK_CLOSE) :].lstrip()


def reasoning_of(source: Mapping[str, Any]) -> str | None:
    """The reasoning text of a chat message or delta, whichever field the provider uses."""
    for key in ("reasoning_content", "reasoning", "reasoning_text"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def usage_from_chat(usage: Any) -> dict[str, Any] | None:
    """Chat ``usage`` in the Responses shape, or None when the upstream sent none; a ``cost``
    the engine put into it is kept."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    total = _int(usage.get("total_tokens")) or prompt + completion
    prompt_details = usage.get("prompt_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    cached = cached or _int(usage.get("cached_tokens"))  # Together puts it at the top
    completion_details = usage.get("completion_tokens_details")
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0
    )
    out: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }
    if "cost" in usage:  # the engine's price of the request (USD, or None when unknown)
        out["cost"] = usage["cost"]
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def response_object(
    request: ChatRequest,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response object with every field the openai SDK's ``Response`` model requires."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": (
            {"reason": incomplete_reason} if incomplete_reason is not None else None
        ),
        "model": model,
        "output": output,
        "usage": usage,
        **request.echo,
    }


def tool_item(origin: ToolOrigin | None, name: str, call_id: str, arguments: str) -> dict[str, Any]:
    """The output item for one chat tool call: a function_call or a custom_tool_call."""
    if origin is not None and origin.kind == "custom":
        try:
            parsed = wire.loads(arguments) if arguments else {}
        except ValueError:
            parsed = None
        text = parsed.get("input") if isinstance(parsed, dict) else None
        item: dict[str, Any] = {
            "id": new_id("ctc"),
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": call_id,
            "name": origin.name,
            "input": text if isinstance(text, str) else arguments,
        }
    else:
        item = {
            "id": new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": call_id,
            "name": origin.name if origin is not None else name,
            "arguments": arguments,
        }
    if origin is not None and origin.namespace is not None:
        item["namespace"] = origin.namespace
    return item


def reasoning_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": new_id("rs"),
        "type": "reasoning",
        "status": status,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def message_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def incomplete_reason(finish_reason: str | None) -> str | None:
    """The ``incomplete_details.reason`` of a chat finish reason, None when it completed."""
    return _FINISH_INCOMPLETE.get(finish_reason) if finish_reason else None
