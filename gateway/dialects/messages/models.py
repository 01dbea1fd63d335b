"""GET /v1/models in Anthropic's list format, from the gateway's model objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def models_page(
    objects: Sequence[Mapping[str, Any]],
    *,
    limit: int = 20,
    after_id: str | None = None,
    before_id: str | None = None,
) -> dict[str, Any]:
    """One page of ``GET /v1/models`` in Anthropic's format from the gateway's model objects.

    ``after_id`` pages forward (the objects after it), ``before_id`` backward (the ``limit``
    objects just before it); an unknown id gives an empty page. ``display_name`` is the alias
    name for an alias, the model part of the ref otherwise.
    """
    ids = [str(obj.get("id")) for obj in objects]
    start, end = 0, len(objects)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else end
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(start, end - limit)
    chosen = objects[start : min(end, start + limit)]
    data = [_model_info(obj) for obj in chosen]
    has_more = (start + len(chosen) < end) if before_id is None else start > 0
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _model_info(obj: Mapping[str, Any]) -> dict[str, Any]:
    model_id = str(obj.get("id"))
    created = obj.get("created")
    when = datetime.fromtimestamp(created if isinstance(created, int | float) else 0, UTC)
    info: dict[str, Any] = {
        "type": "model",
        "id": model_id,
        "display_name": display_name(obj),
        "created_at": when.isoformat().replace("+00:00", "Z"),
        "lifecycle": "active",
    }
    if isinstance(obj.get("context_length"), int):
        info["max_input_tokens"] = obj["context_length"]
    if isinstance(obj.get("max_output_tokens"), int):
        info["max_tokens"] = obj["max_output_tokens"]
    return info


def display_name(obj: Mapping[str, Any]) -> str:
    """``coderclaw (the configured chain)``, ``alias → Model-Name``, or the ref's model name."""
    model_id = str(obj.get("id"))
    if model_id == "coderclaw":
        return "coderclaw (the configured chain)"
    target = obj.get("alias_for")
    if isinstance(target, str):
        return f"{model_id} → {_model_name(target)}"
    return _model_name(model_id)


def _model_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1] or ref
