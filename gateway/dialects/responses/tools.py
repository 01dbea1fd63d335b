"""Responses tools and ``tool_choice`` → chat ``tools`` and ``tool_choice``.

``function`` tools pass as chat functions; a ``custom`` tool becomes a function with one string
argument ``input`` (its grammar, if any, goes into the description); the function tools of a
``namespace`` group are offered under their own name (``<namespace>__<name>`` when two would
clash). Every other tool type is hosted (web_search, file_search, computer, code_interpreter,
image_generation, mcp, local_shell, shell, apply_patch, tool_search…): dropped when merely
offered and reported by type; a ``tool_choice`` that forces one is a ``DialectError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.dialects.responses.shapes import ToolOrigin
from gateway.errors import DialectError

_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})


def translate_tools(
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


def apply_tool_choice(
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
