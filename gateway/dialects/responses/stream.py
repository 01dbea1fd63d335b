"""Upstream chat chunks → OpenAI Responses SSE events, one translator per streamed response.

The engine's sink drives it: ``start(served)`` when the first upstream chunk arrives,
``feed(chunk)`` per parsed chat chunk, then exactly one of ``finish()`` (a clean end) or
``fail(message, code)`` (a failure after commit). Each returns the bytes to write. Events are
framed ``event: <type>\\ndata: <json>\\n\\n`` as OpenAI sends them, with ``sequence_number``
counting from 0; ``response`` is the final Response object (for the store).

Items open and close the way OpenAI's stream does: reasoning (from ``reasoning_content`` /
``reasoning`` / ``reasoning_text`` deltas, or inline ``<think>…</think>`` at the start of the
content, the tags possibly split across chunks), then text, then tool calls; an item is done
when the next kind starts or the stream ends. A chat tool call whose index is new closes the
previous call. A failure closes nothing: open items are left ``incomplete`` in the final
object and the stream ends with ``response.failed``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway import wire
from gateway.dialects.responses.shapes import (
    THINK_CLOSE,
    THINK_OPEN,
    ChatRequest,
    incomplete_reason,
    new_id,
    output_text,
    response_object,
    tool_item,
    usage_from_chat,
)

# How the content of the stream is being read: maybe a <think> block ahead, inside one, just
# after one (leading blank lines dropped), or plain text.
_START, _THINK, _AFTER_THINK, _TEXT = range(4)
# The codes the openai SDK's ``ResponseError.code`` admits that a gateway can mean.
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
_CLOSE_LEN = len(THINK_CLOSE)


class _Call:
    __slots__ = ("custom", "done", "index", "item", "parts", "prefix")

    def __init__(self, item: dict[str, Any], index: int, custom: bool) -> None:
        self.item = item
        self.index = index
        self.custom = custom
        self.parts: list[str] = []
        self.done = False
        self.prefix = b""


class ResponsesStream:
    """Renders one streamed Response from chat chunks; see the module docstring."""

    def __init__(self, request: ChatRequest, *, response_id: str, created_at: int) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.model = ""
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._state = _START
        self._pending = ""
        self._msg: dict[str, Any] | None = None
        self._msg_index = 0
        self._msg_parts: list[str] = []
        self._msg_prefix = b""
        self._rs: dict[str, Any] | None = None
        self._rs_index = 0
        self._rs_parts: list[str] = []
        self._rs_prefix = b""
        self._calls: dict[int, _Call] = {}
        self._call: _Call | None = None
        self._usage: Any = None
        self._finish_reason: str | None = None
        self._final: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- api

    def start(self, served: str) -> bytes:
        """``response.created`` and ``response.in_progress``; ``served`` is the ref serving."""
        self.model = served
        snapshot = self._snapshot("in_progress")
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events one parsed upstream chat chunk produces (often exactly one delta)."""
        if self._final is not None:
            return b""
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return b""
        choice = choices[0]
        if type(choice) is not dict:
            return b""
        finish = choice.get("finish_reason")
        if finish and isinstance(finish, str):
            self._finish_reason = finish
        delta = choice.get("delta")
        if not delta or type(delta) is not dict:
            return b""
        content = delta.get("content")
        reasoning = (
            delta.get("reasoning_content") or delta.get("reasoning") or delta.get("reasoning_text")
        )
        calls = delta.get("tool_calls")
        if self._msg is not None and not reasoning and not calls and type(content) is str:
            # The hot path: one more piece of text in the open message.
            return self._delta(self._msg_prefix, content, self._msg_parts) if content else b""
        out: list[bytes] = []
        if reasoning and isinstance(reasoning, str):
            self._reasoning_delta(reasoning, out)
        if content and isinstance(content, str):
            if self._state == _TEXT:
                self._text_delta(content, out)
            else:
                self._think_content(content, out)
        if calls:
            self._tool_calls(calls, out)
        return b"".join(out)

    def finish(self, completed_at: int | None = None) -> bytes:
        """Close the open items, then ``response.completed`` or ``response.incomplete``."""
        if self._final is not None:
            return b""
        out: list[bytes] = []
        self._flush_pending(out)
        reason = incomplete_reason(self._finish_reason)
        status = "incomplete" if reason else "completed"
        self._close_all(out, status)
        self._final = response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=self._output,
            usage=usage_from_chat(self._usage),
            incomplete_reason=reason,
            completed_at=None if reason else (completed_at or int(time.time())),
        )
        kind = "response.incomplete" if reason else "response.completed"
        out.append(self._event(kind, {"response": self._final}))
        return b"".join(out)

    def fail(self, message: str, code: str | None = "server_error") -> bytes:
        """``response.failed`` with ``error``; nothing open is closed as completed."""
        if self._final is not None:
            return b""
        for item in self._output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self._sync_open()
        error = {"code": code if code in _ERROR_CODES else "server_error", "message": message}
        self._final = response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status="failed",
            output=self._output,
            usage=usage_from_chat(self._usage),
            error=error,
        )
        return self._event("response.failed", {"response": self._final})

    @property
    def response(self) -> dict[str, Any]:
        """The final Response object once finished or failed, else a snapshot in progress."""
        return self._final if self._final is not None else self._snapshot("in_progress")

    # --------------------------------------------------------------------------- events

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload["type"] = kind
        payload["sequence_number"] = self._seq
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + wire.dumps(payload) + b"\n\n"

    def _delta_prefix(self, kind: str, item: dict[str, Any], index: int, part: bool) -> bytes:
        """The bytes of a delta event up to its ``delta`` value, written once per item."""
        fields = b'{"type":"' + kind.encode() + b'","item_id":' + wire.dumps(item["id"])
        fields += b',"output_index":%d' % index
        if part:
            fields += b',"content_index":0'
        if kind == "response.output_text.delta":
            fields += b',"logprobs":[]'
        return b"event: " + kind.encode() + b"\ndata: " + fields + b',"delta":'

    def _delta(self, prefix: bytes, text: str, parts: list[str]) -> bytes:
        """One delta event: the item's prefix, the text, the sequence number."""
        parts.append(text)
        seq = self._seq
        self._seq = seq + 1
        return prefix + wire.dumps(text) + b',"sequence_number":%d}\n\n' % seq

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=[],
        )

    # ---------------------------------------------------------------------- <think> text

    def _think_content(self, content: str, out: list[bytes]) -> None:
        """Content while a ``<think>`` block may be ahead, open, or just closed."""
        buf = self._pending + content
        self._pending = ""
        if self._state == _START:
            head = buf.lstrip()
            if not head or (len(head) < len(THINK_OPEN) and THINK_OPEN.startswith(head)):
                self._pending = buf  # blank so far, or a tag cut in two
                return
            if not head.startswith(THINK_OPEN):
                self._state = _TEXT
                self._text_delta(buf, out)
                return
            self._state = _THINK
            buf = head[len(THINK_OPEN) :]
        if self._state == _THINK:
            end = buf.find(THINK_CLOSE)
            if end < 0:
                cut = buf.rfind("<", max(len(buf) - _CLOSE_LEN + 1, 0))
                if cut >= 0 and THINK_CLOSE.startswith(buf[cut:]):
                    self._pending = buf[cut:]
                    buf = buf[:cut]
                if buf:
                    self._reasoning_delta(buf, out)
                return
            if end:
                self._reasoning_delta(buf[:end], out)
            self._close_reasoning(out, "completed")
            self._state = _AFTER_THINK
            buf = buf[end + _CLOSE_LEN :]
        text = buf.lstrip()
        if text:
            self._state = _TEXT
            self._text_delta(text, out)

    def _flush_pending(self, out: list[bytes]) -> None:
        pending, self._pending = self._pending, ""
        if not pending:
            return
        if self._state == _THINK:
            self._reasoning_delta(pending, out)
        elif pending.strip():
            self._text_delta(pending, out)

    # ---------------------------------------------------------------------------- items

    def _reasoning_delta(self, text: str, out: list[bytes]) -> None:
        if self._rs is None:
            self._close_text(out, "completed")
            self._close_call(out, "completed")
            self._rs = {
                "id": new_id("rs"),
                "type": "reasoning",
                "status": "in_progress",
                "summary": [],
                "content": [],
            }
            self._rs_index = len(self._output)
            self._rs_parts = []
            self._rs_prefix = self._delta_prefix(
                "response.reasoning_text.delta", self._rs, self._rs_index, True
            )
            self._output.append(self._rs)
            out.append(
                self._event(
                    "response.output_item.added",
                    {"output_index": self._rs_index, "item": self._rs},
                )
            )
            out.append(
                self._event(
                    "response.content_part.added",
                    {
                        "item_id": self._rs["id"],
                        "output_index": self._rs_index,
                        "content_index": 0,
                        "part": {"type": "reasoning_text", "text": ""},
                    },
                )
            )
        out.append(self._delta(self._rs_prefix, text, self._rs_parts))

    def _close_reasoning(self, out: list[bytes], status: str) -> None:
        item = self._rs
        if item is None:
            return
        self._rs = None
        text = "".join(self._rs_parts)
        part = {"type": "reasoning_text", "text": text}
        ids = {"item_id": item["id"], "output_index": self._rs_index, "content_index": 0}
        out.append(self._event("response.reasoning_text.done", {**ids, "text": text}))
        out.append(self._event("response.content_part.done", {**ids, "part": part}))
        item["content"] = [part]
        item["status"] = status
        out.append(
            self._event("response.output_item.done", {"output_index": self._rs_index, "item": item})
        )

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        msg = self._msg
        if msg is None:
            self._close_reasoning(out, "completed")
            self._close_call(out, "completed")
            msg = self._msg = {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self._msg_index = len(self._output)
            self._msg_parts = []
            self._msg_prefix = self._delta_prefix(
                "response.output_text.delta", msg, self._msg_index, True
            )
            self._output.append(msg)
            out.append(
                self._event(
                    "response.output_item.added", {"output_index": self._msg_index, "item": msg}
                )
            )
            out.append(
                self._event(
                    "response.content_part.added",
                    {
                        "item_id": msg["id"],
                        "output_index": self._msg_index,
                        "content_index": 0,
                        "part": output_text(""),
                    },
                )
            )
        out.append(self._delta(self._msg_prefix, text, self._msg_parts))

    def _close_text(self, out: list[bytes], status: str) -> None:
        item = self._msg
        if item is None:
            return
        self._msg = None
        text = "".join(self._msg_parts)
        part = output_text(text)
        ids = {"item_id": item["id"], "output_index": self._msg_index, "content_index": 0}
        out.append(self._event("response.output_text.done", {**ids, "text": text, "logprobs": []}))
        out.append(self._event("response.content_part.done", {**ids, "part": part}))
        item["content"] = [part]
        item["status"] = status
        out.append(
            self._event(
                "response.output_item.done", {"output_index": self._msg_index, "item": item}
            )
        )

    def _tool_calls(self, calls: list[Any], out: list[bytes]) -> None:
        for position, raw in enumerate(calls):
            if not isinstance(raw, dict):
                continue
            index = raw.get("index", position)
            index = index if type(index) is int else position
            function = raw.get("function")
            function = function if isinstance(function, dict) else {}
            call = self._calls.get(index)
            if call is None:
                self._flush_pending(out)
                self._close_reasoning(out, "completed")
                self._close_text(out, "completed")
                self._close_call(out, "completed")
                name = function.get("name")
                name = name if isinstance(name, str) else ""
                call_id = raw.get("id")
                call_id = call_id if isinstance(call_id, str) and call_id else new_id("call")
                origin = self.request.tools.get(name)
                item = tool_item(origin, name, call_id, "")
                item["status"] = "in_progress"
                call = _Call(
                    item, len(self._output), origin is not None and origin.kind == "custom"
                )
                call.prefix = self._delta_prefix(
                    "response.function_call_arguments.delta", item, call.index, False
                )
                self._calls[index] = call
                self._call = call
                self._output.append(item)
                out.append(
                    self._event(
                        "response.output_item.added", {"output_index": call.index, "item": item}
                    )
                )
            arguments = function.get("arguments")
            if not arguments or not isinstance(arguments, str):
                continue
            if call.done:
                call.parts.append(arguments)
                self._set_arguments(call)  # a late fragment: the final object stays whole
            elif call.custom:
                call.parts.append(arguments)
            else:
                out.append(self._delta(call.prefix, arguments, call.parts))

    def _set_arguments(self, call: _Call) -> str:
        arguments = "".join(call.parts)
        if call.custom:
            done = tool_item(self.request.tools.get(call.item["name"]), "", "", arguments)
            call.item["input"] = done["input"]
            return str(done["input"])
        call.item["arguments"] = arguments
        return arguments

    def _close_call(self, out: list[bytes], status: str) -> None:
        call = self._call
        if call is None:
            return
        self._call = None
        call.done = True
        item = call.item
        value = self._set_arguments(call)
        ids = {"item_id": item["id"], "output_index": call.index}
        if call.custom:
            out.append(
                self._event("response.custom_tool_call_input.delta", {**ids, "delta": value})
            )
            out.append(self._event("response.custom_tool_call_input.done", {**ids, "input": value}))
        else:
            out.append(
                self._event("response.function_call_arguments.done", {**ids, "arguments": value})
            )
        item["status"] = status
        out.append(
            self._event("response.output_item.done", {"output_index": call.index, "item": item})
        )

    def _close_all(self, out: list[bytes], status: str) -> None:
        closers = [
            (self._rs_index, self._close_reasoning) if self._rs is not None else None,
            (self._msg_index, self._close_text) if self._msg is not None else None,
            (self._call.index, self._close_call) if self._call is not None else None,
        ]
        for _, close in sorted((c for c in closers if c is not None), key=lambda c: c[0]):
            close(out, status)

    def _sync_open(self) -> None:
        """Fill the open items' text into the final object of a failed response."""
        if self._rs is not None:
            self._rs["content"] = [{"type": "reasoning_text", "text": "".join(self._rs_parts)}]
        if self._msg is not None:
            self._msg["content"] = [output_text("".join(self._msg_parts))]
        if self._call is not None:
            self._set_arguments(self._call)
