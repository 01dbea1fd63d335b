"""Upstream chat output as Messages: the complete message and the SSE event stream."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import wire
from gateway.dialects.messages.request import ChatRequest

_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_REASONING_KEYS = ("reasoning_content", "reasoning", "reasoning_text")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def stop_reason(
    finish_reason: Any, *, tool_calls: bool, matched: Any, stop_sequences: Sequence[str]
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an upstream ``finish_reason``.

    ``matched`` is the choice's ``stop_reason`` (vLLM names the stop string that matched);
    a provider that says ``stop`` after calling tools still gets ``tool_use``.
    """
    reason = _FINISH.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else ""
    reason = reason or "end_turn"
    if tool_calls and reason == "end_turn":
        return "tool_use", None
    if reason == "end_turn" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return reason, None


def tool_use_id(upstream_id: Any, message_id: str, index: int) -> str:
    """A ``toolu_…`` id from the upstream call id (one made from the message id if none)."""
    if isinstance(upstream_id, str) and upstream_id:
        safe = _ID_UNSAFE.sub("_", upstream_id)
        return safe if safe.startswith("toolu_") else f"toolu_{safe}"
    return f"toolu_{message_id.removeprefix('msg_')}_{index}"


def usage_of(usage: Any) -> dict[str, Any]:
    """Anthropic usage from chat usage: input tokens exclude the cache reads, as Anthropic's do;
    the gateway's ``cost`` (USD, or None when no price is known) is kept when present."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    cached = cached or _int(usage.get("cached_tokens"))
    out: dict[str, Any] = {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": _int(usage.get("completion_tokens")),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    if "cost" in usage:
        out["cost"] = usage["cost"]
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def split_think(text: str) -> tuple[str, str]:
    """(thinking, text) of content that may start with an inline ``<think>…</think>``."""
    stripped = text.lstrip()
    if not stripped.startswith("<think>"):
        return "", text
    inner = stripped[len("<think>") :]
    end = inner.find("</think>")
    if end < 0:
        return inner, ""
    return inner[:end], inner[end + len("</think>") :].lstrip()


def message_from_chat(
    chat: Mapping[str, Any], *, message_id: str, model: str, request: ChatRequest
) -> dict[str, Any]:
    """The Messages ``message`` for a complete upstream chat completion."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    thinking, text = split_think(text)
    for key in _REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value:
            thinking = value + thinking
            break
    blocks: list[dict[str, Any]] = []
    if request.thinking and thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.get("id"), message_id, i),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason") if isinstance(choice, Mapping) else None,
        tool_calls=any(b["type"] == "tool_use" for b in blocks),
        matched=choice.get("stop_reason") if isinstance(choice, Mapping) else None,
        stop_sequences=request.stop_sequences,
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_of(chat.get("usage")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as an object; text that is not a JSON object is kept whole."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = wire.loads(arguments)
    except ValueError:
        value = None
    return dict(value) if isinstance(value, dict) else {"_arguments": arguments}


# -- streaming ------------------------------------------------------------------------------

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


def _event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + wire.dumps(payload) + b"\n\n"


def _delta_prefix(kind: str, field: str, index: int) -> bytes:
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + str(index).encode()
        + b',"delta":{"type":"'
        + kind.encode()
        + b'","'
        + field.encode()
        + b'":'
    )


_PING = _event("ping", {"type": "ping"})
_STOP = _event("message_stop", {"type": "message_stop"})


class MessagesStream:
    """Renders upstream chat chunks as Messages SSE events, one block open at a time.

    ``start`` once, ``feed`` per parsed chunk, then ``finish`` (a clean end) or ``fail`` (an
    ``event: error`` and no ``message_stop``). Reasoning (``reasoning_content`` /
    ``reasoning`` / ``reasoning_text`` or a leading inline ``<think>``) becomes ``thinking``
    blocks when the request asked for thinking, and is left out otherwise.
    """

    __slots__ = (
        "_calls",
        "_finish",
        "_index",
        "_kind",
        "_matched",
        "_message_id",
        "_open",
        "_pending",
        "_prefix",
        "_request",
        "_think",
        "_tool_seen",
        "_usage",
    )

    def __init__(self, request: ChatRequest, message_id: str) -> None:
        self._request = request
        self._message_id = message_id
        self._index = -1  # index of the newest block
        self._open = False
        self._kind = ""  # "thinking" | "text" | "tool"
        self._prefix = b""  # the delta event prefix of the open block
        self._calls: dict[int, _Call] = {}
        # inline <think> state: "start" (may still open), "in", "after" (closed), "done"
        self._think = "start"
        self._pending = ""  # text held back: maybe the start of a tag
        self._finish: Any = None
        self._matched: Any = None
        self._tool_seen = False
        self._usage: Any = None

    def start(self, served: str, input_tokens: int = 0) -> bytes:
        """``message_start``; ``input_tokens`` may be an estimate: ``message_delta`` carries
        the upstream's count, which the SDKs take over."""
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": served,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def ping(self) -> bytes:
        return _PING

    def feed_all(self, chunks: Iterable[Mapping[str, Any]]) -> bytes:
        return b"".join([self.feed(chunk) for chunk in chunks])

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return b""
        choice = choices[0]
        if not isinstance(choice, dict):
            return b""
        out = b""
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            for key in _REASONING_KEYS:
                value = delta.get(key)
                if value and isinstance(value, str):
                    out += self._thinking(value)
                    break
            content = delta.get("content")
            if content and isinstance(content, str):
                out += self._content(content)
            calls = delta.get("tool_calls")
            if calls and isinstance(calls, list):
                out += self._tool_calls(calls)
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish
            self._matched = choice.get("stop_reason")
        return out

    def finish(self) -> bytes:
        out = self._flush_pending() + self._close()
        reason, sequence = stop_reason(
            self._finish,
            tool_calls=self._tool_seen,
            matched=self._matched,
            stop_sequences=self._request.stop_sequences,
        )
        usage = usage_of(self._usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage,
        }
        return out + _event("message_delta", delta) + _STOP

    def fail(self, message: str, overloaded: bool = False) -> bytes:
        kind = "overloaded_error" if overloaded else "api_error"
        return _event("error", {"type": "error", "error": {"type": kind, "message": message}})

    # -- blocks ---------------------------------------------------------------------------

    def _close(self) -> bytes:
        if not self._open:
            return b""
        self._open = False
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = True
        self._kind = kind
        if kind == "thinking":
            self._prefix = _delta_prefix("thinking_delta", "thinking", self._index)
        elif kind == "text":
            self._prefix = _delta_prefix("text_delta", "text", self._index)
        else:
            self._prefix = _delta_prefix("input_json_delta", "partial_json", self._index)
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _event("content_block_start", start)

    def _delta(self, kind: str, text: str, block: dict[str, Any]) -> bytes:
        out = b""
        if not (self._open and self._kind == kind):
            out = self._open_block(kind, block)
        return out + self._prefix + wire.dumps(text) + b"}}\n\n"

    def _thinking(self, text: str) -> bytes:
        if not self._request.thinking:
            return b""
        return self._delta("thinking", text, {"type": "thinking", "thinking": "", "signature": ""})

    def _text(self, text: str) -> bytes:
        return self._delta("text", text, {"type": "text", "text": ""}) if text else b""

    def _content(self, text: str) -> bytes:
        if self._think == "done":
            return self._text(text)
        if self._think == "after":  # the blank lines after </think> are not text
            text = text.lstrip()
            if not text:
                return b""
            self._think = "done"
            return self._text(text)
        text = self._pending + text
        self._pending = ""
        if self._think == "start":
            stripped = text.lstrip()
            if not stripped:
                self._pending = text
                return b""
            if stripped.startswith(_THINK_OPEN):
                self._think = "in"
                text = stripped[len(_THINK_OPEN) :]
            elif _THINK_OPEN.startswith(stripped):
                self._pending = text
                return b""
            else:
                self._think = "done"
                return self._text(text)
        end = text.find(_THINK_CLOSE)
        if end >= 0:
            after = text[end + len(_THINK_CLOSE) :].lstrip()
            self._think = "done" if after else "after"
            return self._thinking_piece(text[:end]) + self._text(after)
        keep = _partial_suffix(text, _THINK_CLOSE)
        self._pending = text[len(text) - keep :] if keep else ""
        return self._thinking_piece(text[: len(text) - keep])

    def _thinking_piece(self, text: str) -> bytes:
        return self._thinking(text) if text else b""

    def _flush_pending(self) -> bytes:
        held, self._pending = self._pending, ""
        if not held:
            return b""
        if self._think == "in":
            return self._thinking(held)
        return self._text(held)

    def _tool_calls(self, calls: Any) -> bytes:
        out = b""
        for position, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            index = call.get("index")
            index = index if isinstance(index, int) else position
            state = self._calls.get(index)
            if state is None:
                state = self._calls[index] = _Call()
            call_id = call.get("id")
            if call_id and isinstance(call_id, str) and not state.id:
                state.id = call_id
            function = call.get("function")
            function = function if isinstance(function, dict) else {}
            name = function.get("name")
            if name and isinstance(name, str) and not state.name:
                state.name = name  # some providers repeat the name on every chunk
            arguments = function.get("arguments")
            if arguments and isinstance(arguments, str):
                state.buffer += arguments
            if state.block is None:
                if not state.name:
                    continue  # no name yet: hold the arguments until one comes
                out += self._flush_pending()
                block = {
                    "type": "tool_use",
                    "id": tool_use_id(state.id, self._message_id, index),
                    "name": state.name,
                    "input": {},
                }
                out += self._open_block("tool", block)
                state.block = self._index
                self._tool_seen = True
            if state.buffer:
                prefix = (
                    self._prefix
                    if state.block == self._index and self._open
                    else (_delta_prefix("input_json_delta", "partial_json", state.block))
                )
                out += prefix + wire.dumps(state.buffer) + b"}}\n\n"
                state.buffer = ""
        return out


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    buffer: str = ""
    block: int | None = None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
