"""A ``POST /v1/responses`` body → one upstream chat completions request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway import wire
from gateway.dialects.responses.shapes import ChatRequest, ToolOrigin, new_id
from gateway.dialects.responses.tools import apply_tool_choice, translate_tools
from gateway.errors import DialectError

_HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)


def chat_request(body: Mapping[str, Any], history: Sequence[Any] | None = None) -> ChatRequest:
    """Translate a ``POST /v1/responses`` body (plus the stored items of
    ``previous_response_id``, oldest first) into one upstream chat request.

    Raises ``DialectError`` naming the field for a body that cannot be translated.
    """
    if not isinstance(body, Mapping):
        raise DialectError("The request body must be a JSON object.")
    model = _opt(body, "model", str, "a string naming a model or a chain")
    stream = bool(_opt(body, "stream", bool, "true or false"))
    store = _opt(body, "store", bool, "true or false")
    previous = _opt(body, "previous_response_id", str, "a response id")
    for unsupported, hint in (
        ("conversation", "use previous_response_id to continue a stored response"),
        ("prompt", "send the prompt text itself as input"),
    ):
        if body.get(unsupported) is not None:
            raise DialectError(
                f"'{unsupported}' is not supported by the gateway: {hint}.", unsupported
            )

    tools, origins, dropped = translate_tools(body.get("tools"))
    input_items = _input_items(body.get("input"))
    instructions = _opt(body, "instructions", str, "a string")
    messages = _chat_messages(instructions, history or (), input_items, origins)

    chat: dict[str, Any] = {"messages": messages}
    if model is not None:
        chat["model"] = model
    apply_tool_choice(body.get("tool_choice"), chat, tools, origins, dropped)
    parallel = _opt(body, "parallel_tool_calls", bool, "true or false")
    if parallel is False and "tools" in chat:
        # Only false is sent: true is every provider's default, and the router's providers
        # are not all known to accept the field.
        chat["parallel_tool_calls"] = False
    _sampling(body, chat)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    reasoning = body.get("reasoning") or {}
    echo = {
        "instructions": instructions,
        "tools": list(body.get("tools") or []),
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": parallel is not False,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": previous,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": _opt(body, "metadata", dict, "an object of string values") or {},
        "user": body.get("user"),
        "store": True if store is None else store,
        "truncation": "disabled",
        "background": False,
    }
    return ChatRequest(
        body=chat,
        stream=stream,
        model=model,
        input_items=input_items,
        dropped_tools=tuple(dropped),
        store=True if store is None else store,
        previous_response_id=previous,
        echo=echo,
        tools=origins,
    )


def _chat_messages(
    instructions: str | None,
    history: Sequence[Any],
    input_items: list[dict[str, Any]],
    origins: Mapping[str, ToolOrigin],
) -> list[dict[str, Any]]:
    """The chat messages: instructions, then the stored history, then this request's input."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    converter = _Messages(messages, origins)
    for index, item in enumerate(history):
        converter.add(item, f"previous_response_id (stored item {index})")
    for index, item in enumerate(input_items):
        converter.add(item, f"input[{index}]")
    converter.close()
    if not messages:
        raise DialectError("'input' is required: a string or a list of input items.", "input")
    return messages


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    """Output length, sampling, user, reasoning effort and output format onto ``chat``."""
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise DialectError(
                "'max_output_tokens' must be a positive integer.", "max_output_tokens"
            )
        chat["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DialectError(f"'{key}' must be a number.", key)
            chat[key] = value
    user = _opt(body, "user", str, "a string")
    if user is not None:
        chat["user"] = user
    reasoning = _opt(body, "reasoning", dict, 'an object such as {"effort": "low"}')
    if reasoning and reasoning.get("effort") is not None:
        effort = reasoning["effort"]
        if not isinstance(effort, str):
            raise DialectError(
                '\'reasoning.effort\' must be a string such as "low" or "high".',
                "reasoning.effort",
            )
        chat["reasoning_effort"] = effort
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format


def _opt(body: Mapping[str, Any], key: str, kind: type, expected: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise DialectError(f"'{key}' must be {expected}.", key)
    return value


def _input_items(raw: Any) -> list[dict[str, Any]]:
    """The input as a list of items with ids (a string becomes one user message)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}
        ]
    if not isinstance(raw, list):
        raise DialectError("'input' must be a string or a list of input items.", "input")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise DialectError(f"'input[{index}]' must be an object (an input item).", "input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind is None:
            raise DialectError(
                f"'input[{index}]' has no 'type': expected message, function_call or "
                "function_call_output.",
                f"input[{index}]",
            )
        items.append(_stored(item, kind))
    return items


def _stored(item: dict[str, Any], kind: str) -> dict[str, Any]:
    """An input item as the store keeps it: with an id, a status and its content as parts, the
    shape ``GET /v1/responses/{id}/input_items`` lists."""
    stored = dict(item)
    stored["type"] = kind
    if not stored.get("id"):
        stored["id"] = new_id(_ID_PREFIX.get(kind, "item"))
    if kind in _ID_PREFIX and kind != "reasoning":
        stored.setdefault("status", "completed")
    if kind == "message":
        part_type = "output_text" if item.get("role") == "assistant" else "input_text"
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": part_type, "text": content}]
        if isinstance(content, list):
            stored["content"] = [
                {**part, "annotations": part.get("annotations") or []}
                if isinstance(part, dict) and part.get("type") == "output_text"
                else part
                for part in content
            ]
    return stored


_IMAGE_OUTPUT = "The tool returned an image; it follows in the next message."
_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}


class _Messages:
    """Turns Responses items into chat messages, in order, merging what chat keeps together."""

    def __init__(self, out: list[dict[str, Any]], origins: Mapping[str, ToolOrigin]) -> None:
        self.out = out
        self.images: list[dict[str, Any]] = []  # tool-output images, sent after the tool turn
        self.chat_names = {(o.namespace, o.name): chat for chat, o in origins.items()}

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise DialectError(f"'{where}' must be an object (an input item).", "input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, kind, where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, where)
        elif kind == "reasoning" or kind in _HOSTED_ITEMS:
            return
        elif kind == "item_reference":
            raise DialectError(
                f"'{where}' is an item_reference, which the gateway does not resolve: send the "
                "item itself, or continue with previous_response_id.",
                "input",
            )
        else:
            raise DialectError(
                f"'{where}' has type {kind!r}: expected message, function_call, "
                "function_call_output, custom_tool_call(_output) or reasoning.",
                "input",
            )

    def close(self) -> None:
        self._flush_images()

    def _append(self, message: dict[str, Any]) -> None:
        if message["role"] != "tool":
            self._flush_images()
        last = self.out[-1] if self.out else None
        if (
            last is not None
            and message["role"] in ("system", "user")
            and last["role"] == message["role"]
            and isinstance(last["content"], str)
            and isinstance(message["content"], str)
        ):
            last["content"] = f"{last['content']}\n\n{message['content']}"
            return
        self.out.append(message)

    def _flush_images(self) -> None:
        if self.images:
            images, self.images = self.images, []
            self.out.append({"role": "user", "content": images})

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise DialectError(
                f"'{where}.role' must be user, assistant, system or developer.", "input"
            )
        content = _content(item.get("content"), f"{where}.content", allow_images=role == "user")
        chat_role = "system" if role == "developer" else role
        self._append({"role": chat_role, "content": content})

    def _call(self, item: dict[str, Any], kind: str, where: str) -> None:
        name = item.get("name")
        call_id = item.get("call_id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise DialectError(f"'{where}' needs string 'name' and 'call_id'.", "input")
        if kind == "custom_tool_call":
            text = item.get("input")
            arguments = wire.dumps({"input": text if isinstance(text, str) else ""}).decode()
        else:
            raw = item.get("arguments")
            if not isinstance(raw, str):
                raise DialectError(f"'{where}.arguments' must be a JSON string.", "input")
            arguments = raw
        namespace = item.get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else None
        chat_name = self.chat_names.get((namespace, name)) or (
            f"{namespace}__{name}" if namespace else name
        )
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": chat_name, "arguments": arguments},
        }
        last = self.out[-1] if self.out else None
        if last is not None and last["role"] == "assistant" and not self.images:
            last.setdefault("tool_calls", []).append(call)
            return
        self._append({"role": "assistant", "content": None, "tool_calls": [call]})

    def _output(self, item: dict[str, Any], where: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise DialectError(f"'{where}.call_id' must be a string.", "input")
        output = item.get("output")
        if isinstance(output, str):
            text = output
        elif isinstance(output, list):
            parts = _content(output, f"{where}.output", allow_images=True)
            if isinstance(parts, str):
                text = parts
            else:
                text = "\n\n".join(p["text"] for p in parts if p["type"] == "text")
                self.images.extend(p for p in parts if p["type"] == "image_url")
                # Tool messages take text only; the images follow in a user message.
                text = text or _IMAGE_OUTPUT
        elif isinstance(output, dict) and isinstance(output.get("content"), str):
            text = output["content"]  # {content, success} from older clients
        else:
            raise DialectError(
                f"'{where}.output' must be a string or a list of input_text/input_image parts.",
                "input",
            )
        self._append({"role": "tool", "tool_call_id": call_id, "content": text})


def _content(raw: Any, where: str, *, allow_images: bool) -> str | list[dict[str, Any]]:
    """Message content as a chat string, or a list of parts when images are present."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise DialectError(f"'{where}' must be a string or a list of content parts.", "input")
    parts: list[dict[str, Any]] = []
    has_image = False
    for index, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal", "summary_text"):
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise DialectError(f"'{where}[{index}].text' must be a string.", "input")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise DialectError(
                    f"'{where}[{index}]' needs an 'image_url' (an https or data: URL); "
                    "file_id images are not supported by the gateway.",
                    "input",
                )
            if not allow_images:
                raise DialectError(f"'{where}[{index}]': images go in user messages.", "input")
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
            has_image = True
        else:
            raise DialectError(
                f"'{where}[{index}]' has type {kind!r}: expected input_text, output_text or "
                "input_image (files are not supported: send their text as input_text).",
                "input",
            )
    if has_image:
        return parts
    return "\n\n".join(p["text"] for p in parts)


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise DialectError("'text' must be an object such as {\"format\": {...}}.", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = fmt.get("name")
        schema = fmt.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise DialectError(
                "'text.format' of type json_schema needs a string 'name' and a 'schema' object.",
                "text.format",
            )
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise DialectError(
        "'text.format.type' must be text, json_schema or json_object.", "text.format"
    )
