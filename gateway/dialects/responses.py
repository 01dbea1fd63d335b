"""The OpenAI Responses API as a pure translator to and from chat completions (SPEC §10.1).

The gateway always sends chat completions upstream. This module turns a ``POST /v1/responses``
body into one upstream chat body (``chat_request``), a chat completion back into a Response
object (``response_from_chat``), and a stream of chat chunks into Responses SSE events
(``gateway.dialects.responses_stream.ResponsesStream``). No I/O here: the engine's sink feeds it.

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

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import wire
from gateway.errors import DialectError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Item types that record calls of hosted tools: the upstream model never saw those tools.
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
_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
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


def error_body(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The error body of a Responses request that failed before anything was sent.

    The Responses API answers HTTP errors in the same OpenAI shape as chat completions;
    ``status`` is the HTTP status the body goes with (it is not part of the body).
    """
    del status
    return wire.error_payload(message, type_, code, param)


# --------------------------------------------------------------------------- request


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

    tools, origins, dropped = _translate_tools(body.get("tools"))
    input_items = _input_items(body.get("input"))
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise DialectError("'instructions' must be a string.", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    converter = _Messages(messages, origins)
    for index, item in enumerate(history or ()):
        converter.add(item, f"previous_response_id (stored item {index})")
    for index, item in enumerate(input_items):
        converter.add(item, f"input[{index}]")
    converter.close()
    if not messages:
        raise DialectError("'input' is required: a string or a list of input items.", "input")

    chat: dict[str, Any] = {"messages": messages}
    if model is not None:
        chat["model"] = model
    _tool_choice(body.get("tool_choice"), chat, tools, origins, dropped)
    if tools:
        parallel = _opt(body, "parallel_tool_calls", bool, "true or false")
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
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
    metadata = _opt(body, "metadata", dict, "an object of string values")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    echo = {
        "instructions": instructions,
        "tools": list(body.get("tools") or []),
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": max_tokens,
        "previous_response_id": previous,
        "reasoning": {"effort": (reasoning or {}).get("effort"), "summary": None},
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": metadata or {},
        "user": user,
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
        stored = dict(item)
        stored["type"] = kind
        if not stored.get("id"):
            stored["id"] = new_id(_ID_PREFIX.get(kind, "item"))
        items.append(stored)
    return items


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


def _translate_tools(
    raw: Any,
) -> tuple[list[dict[str, Any]], dict[str, ToolOrigin], list[str]]:
    """(chat tools, chat name -> origin, dropped hosted tool types)."""
    if raw is None:
        return [], {}, []
    if not isinstance(raw, list):
        raise DialectError("'tools' must be a list of tools.", "tools")
    flat: list[tuple[dict[str, Any], str | None, str]] = []
    dropped: list[str] = []
    for index, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise DialectError(f"'tools[{index}]' must be an object with a 'type'.", "tools")
        if kind in ("function", "custom"):
            flat.append((tool, None, f"tools[{index}]"))
        elif kind == "namespace":
            space = tool.get("name")
            inner = tool.get("tools")
            if not isinstance(space, str) or not isinstance(inner, list):
                raise DialectError(
                    f"'tools[{index}]' (a namespace) needs a string 'name' and a 'tools' list.",
                    "tools",
                )
            for sub, member in enumerate(inner):
                where = f"tools[{index}].tools[{sub}]"
                if isinstance(member, dict) and member.get("type") in ("function", "custom"):
                    flat.append((member, space, where))
                elif isinstance(member, dict) and isinstance(member.get("type"), str):
                    dropped.append(member["type"])
                else:
                    raise DialectError(f"'{where}' must be an object with a 'type'.", "tools")
        elif kind not in dropped:
            dropped.append(kind)
    names = [t.get("name") for t, _, _ in flat]
    chat_tools: list[dict[str, Any]] = []
    origins: dict[str, ToolOrigin] = {}
    for tool, space, where in flat:
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise DialectError(f"'{where}.name' must be a non-empty string.", "tools")
        chat_name = name if space is None or names.count(name) == 1 else f"{space}__{name}"
        origins[chat_name] = ToolOrigin(tool["type"], name, space)
        chat_tools.append(_chat_tool(tool, chat_name, where))
    return chat_tools, origins, dropped


def _chat_tool(tool: dict[str, Any], chat_name: str, where: str) -> dict[str, Any]:
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise DialectError(f"'{where}.description' must be a string.", "tools")
    function: dict[str, Any] = {"name": chat_name}
    if tool["type"] == "custom":
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            grammar = (
                f"The input must follow this {fmt.get('syntax', '')} grammar:\n"
                f"{fmt.get('definition', '')}"
            )
            description = f"{description}\n\n{grammar}" if description else grammar
        function["parameters"] = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The tool's input."}},
            "required": ["input"],
        }
    else:
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise DialectError(f"'{where}.parameters' must be a JSON Schema object.", "tools")
        function["parameters"] = parameters or {"type": "object", "properties": {}}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def _tool_choice(
    raw: Any,
    chat: dict[str, Any],
    tools: list[dict[str, Any]],
    origins: Mapping[str, ToolOrigin],
    dropped: Sequence[str],
) -> None:
    """Set ``tools`` and ``tool_choice`` on the chat body."""
    choice: Any = raw if raw is not None else "auto"
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise DialectError(
                "'tool_choice' must be auto, none, required or an object naming a tool.",
                "tool_choice",
            )
        if choice == "required" and not tools:
            names = ", ".join(dropped) or "none offered"
            raise DialectError(
                "'tool_choice' is required but no tool the gateway can run was offered "
                f"(hosted tools dropped: {names}).",
                "tool_choice",
            )
        if tools:
            chat["tools"] = tools
            if raw is not None:
                chat["tool_choice"] = choice
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise DialectError(
            "'tool_choice' must be auto, none, required or an object naming a tool.",
            "tool_choice",
        )
    kind = choice["type"]
    if kind in ("function", "custom"):
        name = choice.get("name")
        chat_name = _chat_name(origins, name, choice.get("namespace"))
        if chat_name is None:
            raise DialectError(
                f"'tool_choice' names the {kind} tool {name!r}, which is not in 'tools'.",
                "tool_choice",
            )
        chat["tools"] = tools
        chat["tool_choice"] = {"type": "function", "function": {"name": chat_name}}
        return
    if kind == "allowed_tools":
        allowed = {
            _chat_name(origins, t.get("name"), t.get("namespace"))
            for t in choice.get("tools") or []
            if isinstance(t, dict)
        }
        kept = [t for t in tools if t["function"]["name"] in allowed]
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise DialectError("'tool_choice.mode' must be auto or required.", "tool_choice")
        if not kept:
            if mode == "required":
                raise DialectError(
                    "'tool_choice' requires one of its allowed tools, but none of them is a "
                    "tool the gateway can run.",
                    "tool_choice",
                )
            return
        chat["tools"] = kept
        chat["tool_choice"] = mode
        return
    label = kind if kind != "mcp" else f"mcp ({choice.get('server_label', '?')})"
    raise DialectError(
        f"'tool_choice' forces the hosted tool '{label}', which the gateway cannot run (it "
        "sends chat completions to Hugging Face models): offer it as a function tool, or let "
        'the model choose with tool_choice "auto".',
        "tool_choice",
    )


def _chat_name(origins: Mapping[str, ToolOrigin], name: Any, namespace: Any) -> str | None:
    for chat_name, origin in origins.items():
        if origin.name == name and (namespace is None or origin.namespace == namespace):
            return chat_name
    return None


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


# -------------------------------------------------------------------------- response


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
    """Chat ``usage`` in the Responses shape, or None when the upstream sent none."""
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
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }


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
    incomplete = _FINISH_INCOMPLETE.get(finish) if isinstance(finish, str) else None
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


def incomplete_reason(finish_reason: str | None) -> str | None:
    """The ``incomplete_details.reason`` of a chat finish reason, None when it completed."""
    return _FINISH_INCOMPLETE.get(finish_reason) if finish_reason else None
