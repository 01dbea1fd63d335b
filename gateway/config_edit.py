"""Edits of the raw config data (the parsed JSON5, ``${VAR}`` strings untouched).

Pure code: ``config get|set|unset`` paths, ``models set``, fallbacks and aliases. Each edit
works on a ``dict`` that ``store.plan_config_update`` then validates and writes; an edit that
cannot be made raises ``ConfigError`` saying why, before anything is written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import json5

from gateway.config import DEFAULT_PRIMARY
from gateway.errors import ConfigError, RefError
from gateway.refs import ModelRef, is_chain_name, parse_ref
from gateway.secret import mask
from gateway.shared.keys import masked_url, redis_password

Key = str | int
PATH_HINT = (
    "use dotted keys, e.g. gateway.port, agents.defaults.model.fallbacks[0] or "
    'agents.defaults.models["huggingface/Qwen/Qwen3-8B"].alias'
)
SECRET_PATHS = frozenset(
    {("models", "providers", "huggingface", "apiKey"), ("gateway", "auth", "token")}
)
# The URL of ``state.redis`` may carry a password: masked (or refused) is the password only.
REDIS_URL_PATH = ("state", "redis", "url")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[\s*(?:(\d+)|\"((?:[^\"\\]|\\.)*)\"|'([^']*)')\s*\]")


# ----------------------------------------------------------------------------- paths


def parse_path(text: str) -> tuple[Key, ...]:
    """``a.b[0]["x/y"].c`` → ``("a", "b", 0, "x/y", "c")``; ``ConfigError`` when malformed."""
    parts: list[Key] = []
    pos, expect_key = 0, True
    raw = text.strip()
    while pos < len(raw):
        if raw[pos] == "[":
            m = _INDEX.match(raw, pos)
            if not m:
                raise _bad_path(text, f"unclosed or malformed [...] at character {pos + 1}")
            if m.group(1) is not None:
                parts.append(int(m.group(1)))
            else:
                quoted = m.group(2) if m.group(2) is not None else m.group(3)
                parts.append(json.loads(f'"{quoted}"') if m.group(2) is not None else quoted)
            pos, expect_key = m.end(), False
        elif raw[pos] == ".":
            if expect_key:
                raise _bad_path(text, f"empty key at character {pos + 1}")
            pos, expect_key = pos + 1, True
        else:
            if not expect_key:
                raise _bad_path(text, f"expected '.' or '[' at character {pos + 1}")
            m = _SEGMENT.match(raw, pos)
            if not m:
                raise _bad_path(text, f"unexpected {raw[pos]!r} at character {pos + 1}")
            parts.append(m.group(0))
            pos, expect_key = m.end(), False
    if not parts or expect_key:
        raise _bad_path(text, "the path is empty or ends with '.'")
    return tuple(parts)


def _bad_path(text: str, why: str) -> ConfigError:
    return ConfigError(f"bad config path {text!r}: {why}", hint=PATH_HINT)


def format_path(parts: tuple[Key, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SEGMENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def get_value(data: Any, parts: tuple[Key, ...]) -> tuple[bool, Any]:
    """``(True, value)`` when the path exists in ``data``, else ``(False, None)``."""
    node = data
    for part in parts:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_dict = isinstance(part, str) and isinstance(node, dict) and part in node
        if not (in_list or in_dict):
            return False, None
        node = node[part]
    return True, node


def set_value(data: dict[str, Any], parts: tuple[Key, ...], value: Any) -> None:
    """Set the value at the path, creating objects on the way; an index may append."""
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = format_path(parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ConfigError(f"{format_path(parts[:depth]) or 'the top'} is not a list")
            if part > len(node):
                raise ConfigError(f"{here}: index out of range (the list has {len(node)} items)")
            if last:
                node[part : part + 1] = [value]
                return
            if part == len(node):
                node.append({})
            node = node[part]
            continue
        if not isinstance(node, dict):
            where = format_path(parts[:depth]) or "the top"
            raise ConfigError(f"{where} is not an object, cannot set {here}")
        if last:
            node[part] = value
            return
        if part not in node:
            node[part] = [] if isinstance(parts[depth + 1], int) else {}
        node = node[part]


def unset_value(data: dict[str, Any], parts: tuple[Key, ...]) -> bool:
    """Remove the value at the path; False when it was not there."""
    found, parent = get_value(data, parts[:-1])
    key = parts[-1]
    if found and isinstance(key, str) and isinstance(parent, dict) and key in parent:
        del parent[key]
        return True
    if found and isinstance(key, int) and isinstance(parent, list) and 0 <= key < len(parent):
        del parent[key]
        return True
    return False


def parse_value(text: str) -> Any:
    """The command-line VALUE: JSON5 when it parses as JSON5, else the text as a string."""
    try:
        return json5.loads(text)
    except ValueError:
        return text


# ----------------------------------------------------------------------------- secrets
# The rule, for ``config get`` (mask) and ``config set`` (refuse), over any subtree:
# - a value at ``models.providers.huggingface.apiKey`` or ``gateway.auth.token``, or at
#   ``env.vars.<KEY>`` where KEY contains TOKEN, KEY, SECRET, PASSWORD, PASSWD or CREDENTIAL
#   (any case), is a secret unless it is only ``${VAR}`` references;
# - anywhere, a string holding a Hugging Face token (``hf_…``, ``api_org_…``, 16+ characters
#   after the prefix) holds a secret, whatever its key.
# - the password in ``state.redis.url`` (``redis://:PASSWORD@host``), unless it is a ``${VAR}``.
# Masking keeps a token's first and last four characters; a whole value is masked at a secret
# path, only the token inside a string elsewhere (a URL stays readable; the Redis URL's
# password is shown as ``***``).

_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_HF_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?:hf|api_org)_[A-Za-z0-9]{16,}")
_VAR_REFS = re.compile(r"(?:\$\{[A-Z_][A-Z0-9_]*\})+")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def is_secret_path(parts: tuple[Key, ...]) -> bool:
    """Whether the value at ``parts`` is a secret by its place in the config."""
    if tuple(parts) in SECRET_PATHS:
        return True
    return (
        len(parts) == 3
        and parts[:2] == ("env", "vars")
        and isinstance(parts[2], str)
        and _SECRET_NAME.search(parts[2]) is not None
    )


def holds_token(text: str) -> bool:
    """Whether ``text`` contains something shaped like a Hugging Face token."""
    return _HF_TOKEN.search(text) is not None


def _is_reference(value: Any) -> bool:
    """Nothing, an empty string, or only ``${VAR}`` references: no secret in the file."""
    if value is None or value == "":
        return True
    return isinstance(value, str) and _VAR_REFS.fullmatch(value) is not None


def _literal_redis_password(parts: tuple[Key, ...], value: str) -> bool:
    """Whether ``value`` at ``parts`` is a Redis URL holding a password written out."""
    return tuple(parts) == REDIS_URL_PATH and not _is_reference(redis_password(value))


def mask_secrets(value: Any, parts: tuple[Key, ...] = ()) -> Any:
    """A copy of ``value`` (found at ``parts``) with every secret of the rule above masked."""
    return _mask(value, tuple(parts), is_secret_path(parts))


def _mask(value: Any, parts: tuple[Key, ...], secret: bool) -> Any:
    if isinstance(value, dict):
        return {
            k: _mask(v, (*parts, k), secret or is_secret_path((*parts, k)))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v, (*parts, i), secret) for i, v in enumerate(value)]
    if secret and not _is_reference(value) and not isinstance(value, bool):
        return mask(str(value))
    if isinstance(value, str) and _literal_redis_password(parts, value):
        return masked_url(value)
    if isinstance(value, str):
        return _HF_TOKEN.sub(lambda m: mask(m.group(0)), value)
    return value


def find_secret(value: Any, parts: tuple[Key, ...] = ()) -> tuple[Key, ...] | None:
    """The path of the first literal secret in ``value`` (found at ``parts``), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = find_secret(v, (*parts, k))
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = find_secret(v, (*parts, i))
            if found is not None:
                return found
        return None
    if is_secret_path(parts) and not _is_reference(value):
        return parts
    if isinstance(value, str) and _literal_redis_password(parts, value):
        return parts
    if isinstance(value, str) and holds_token(value):
        return parts
    return None


def check_not_secret(parts: tuple[Key, ...], value: Any) -> None:
    """Secrets live in ``$STATE/.env``; the config may only refer to them as ``${VAR}``.

    ``value`` may be a scalar or a whole subtree: a literal secret anywhere in it is refused.
    """
    where = find_secret(value, tuple(parts))
    if where is None:
        return
    if where[:2] == ("gateway", "auth"):
        var = "CODERCLAW_GATEWAY_TOKEN"
    elif len(where) == 3 and where[:2] == ("env", "vars") and _ENV_NAME.fullmatch(str(where[2])):
        var = str(where[2])
    else:
        var = "HF_TOKEN"
    hint = f"put {var}=… in $STATE/.env"
    if var == "HF_TOKEN":
        hint += " (`coderclaw onboard` saves it there)"
    raise ConfigError(
        f"{format_path(where)}: a secret is not written into the config file",
        hint=f'{hint} and refer to it as "${{{var}}}" (or leave the value out)',
    )


def loses_formatting(text: str | None) -> bool:
    """True when rewriting the file as plain JSON drops JSON5 comments or syntax."""
    if text is None or not text.strip():
        return False
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


# ----------------------------------------------------------------------------- models


def ensure_section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    node = data
    for depth, key in enumerate(keys):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: depth + 1])} is not an object", path=None)
        node = child
    return node


def _try_ref(text: Any) -> ModelRef | None:
    try:
        return parse_ref(text)
    except RefError:
        return None


def _entries(data: dict[str, Any]) -> dict[str, Any]:
    found, models = get_value(data, ("agents", "defaults", "models"))
    return models if found and isinstance(models, dict) else {}


def alias_list(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(alias, ref key)`` pairs in file order."""
    return [
        (opts["alias"], key)
        for key, opts in _entries(data).items()
        if isinstance(opts, dict) and isinstance(opts.get("alias"), str) and opts["alias"]
    ]


def resolve_input(data: dict[str, Any], text: str) -> ModelRef:
    """An alias of the config (case-insensitive) or a ref; ``RefError`` otherwise."""
    wanted = text.strip().lower()
    for alias, key in alias_list(data):
        ref = _try_ref(key)
        if ref is not None and alias.strip().lower() == wanted:
            return ref
    return parse_ref(text)


def primary_of(data: dict[str, Any]) -> ModelRef:
    found, value = get_value(data, ("agents", "defaults", "model", "primary"))
    ref = _try_ref(value) if found and value else None
    return ref or parse_ref(DEFAULT_PRIMARY)


def fallbacks_of(data: dict[str, Any]) -> list[Any]:
    found, value = get_value(data, ("agents", "defaults", "model", "fallbacks"))
    return list(value) if found and isinstance(value, list) else []


def set_primary(data: dict[str, Any], ref: ModelRef) -> str | None:
    """Make ``ref`` the primary; returns the previous value as written."""
    model = ensure_section(data, "agents", "defaults", "model")
    previous = model.get("primary")
    model["primary"] = str(ref)
    return previous if isinstance(previous, str) else None


def add_fallback(data: dict[str, Any], ref: ModelRef) -> bool:
    """Append ``ref`` to the fallbacks; False when it is already there."""
    if ref == primary_of(data):
        raise ConfigError(
            f"{ref} is the primary model; a fallback must be another model",
            hint="pick another model, or make this one a fallback after "
            "`coderclaw models set <other>`",
        )
    if any(_try_ref(item) == ref for item in fallbacks_of(data)):
        return False
    model = ensure_section(data, "agents", "defaults", "model")
    current = model.get("fallbacks")
    if current is not None and not isinstance(current, list):
        raise ConfigError("agents.defaults.model.fallbacks is not a list")
    model["fallbacks"] = [*(current or []), str(ref)]
    return True


def remove_fallback(data: dict[str, Any], ref: ModelRef) -> bool:
    """Drop every fallback equal to ``ref``; False when none was there."""
    before = fallbacks_of(data)
    after = [item for item in before if _try_ref(item) != ref]
    if len(after) == len(before):
        return False
    ensure_section(data, "agents", "defaults", "model")["fallbacks"] = after
    return True


def clear_fallbacks(data: dict[str, Any]) -> int:
    """Remove all fallbacks; returns how many there were."""
    count = len(fallbacks_of(data))
    found, model = get_value(data, ("agents", "defaults", "model"))
    if found and isinstance(model, dict):
        model.pop("fallbacks", None)
    return count


def _entry_key(data: dict[str, Any], ref: ModelRef) -> str | None:
    for key in _entries(data):
        if _try_ref(key) == ref:
            return key
    return None


def set_alias(data: dict[str, Any], alias: str, ref: ModelRef) -> str | None:
    """Name ``ref`` with ``alias``; returns the alias it had before, if any."""
    name = alias.strip()
    if not name:
        raise ConfigError("an alias cannot be empty")
    if is_chain_name(name):
        raise ConfigError(
            f"{name!r} already means the configured chain; choose another alias",
        )
    for other, key in alias_list(data):
        if other.strip().lower() == name.lower() and _try_ref(key) != ref:
            raise ConfigError(
                f"the alias {other!r} already names {key}",
                hint=f"remove it first: coderclaw models aliases remove {json.dumps(other)}",
            )
    models = ensure_section(data, "agents", "defaults", "models")
    key = _entry_key(data, ref) or str(ref)
    entry = models.setdefault(key, {})
    if not isinstance(entry, dict):
        raise ConfigError(f'agents.defaults.models["{key}"] is not an object')
    previous = entry.get("alias")
    entry["alias"] = name
    return previous if isinstance(previous, str) else None


def remove_alias(data: dict[str, Any], alias: str) -> str | None:
    """Remove the alias (case-insensitive); returns the ref key it named, None if absent.

    An entry left empty is removed too.
    """
    wanted = alias.strip().lower()
    models = _entries(data)
    for other, key in alias_list(data):
        if other.strip().lower() == wanted:
            entry = models[key]
            del entry["alias"]
            if not entry:
                del models[key]
            return key
    return None


def ensure_alias(data: dict[str, Any], ref: ModelRef, alias: str) -> str | None:
    """Give ``ref`` an entry with ``alias`` unless it has one; returns the alias it ends with.

    An existing entry is kept as it is; an alias already used by another model is not reused
    (the entry is added without one).
    """
    key = _entry_key(data, ref)
    if key is not None:
        entry = _entries(data)[key]
        current = entry.get("alias") if isinstance(entry, dict) else None
        return current if isinstance(current, str) else None
    taken = {other.strip().lower() for other, _ in alias_list(data)}
    models = ensure_section(data, "agents", "defaults", "models")
    if alias.strip().lower() in taken or is_chain_name(alias):
        models[str(ref)] = {}
        return None
    models[str(ref)] = {"alias": alias}
    return alias
