"""Onboarding: get a Hugging Face token and a default model into the state dir.

The pure parts (cleaning a pasted token, the dropdown's choices, the config edit, the summary)
are plain functions. The two flows, ``run_interactive`` (through a ``Prompter``) and
``run_non_interactive`` (flags only), do the I/O: the Hub's token check, the model list, and
one write of ``$STATE/.env`` (0600) and the config (atomic, validated first, other keys kept).

Decisions:
- The token is saved as ``HF_TOKEN`` in ``$STATE/.env``; the other token names are removed from
  that file (they would shadow it). A token written literally into the config's ``apiKey`` is
  removed from the config: secrets live only in ``.env``.
- A rejected token is never saved: interactive onboarding asks again, non-interactive exits 2
  with nothing written. A token the Hub cannot check (no answer, 429, 5xx) is saved with a
  warning: the Hub's check is strictly rate-limited and an outage should not block setup.
- Non-interactive onboarding does not ask the router for models: it sets
  ``huggingface/deepseek-ai/DeepSeek-R1`` (or ``--model``) without a network round trip beyond
  the token check.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.catalog import Catalog, builtin_catalog
from gateway.config import DEFAULT_PRIMARY
from gateway.config_edit import (
    alias_list,
    ensure_alias,
    ensure_section,
    fallbacks_of,
    get_value,
    loses_formatting,
    set_primary,
)
from gateway.discovery import fetch_models, save_cached_catalog
from gateway.errors import ConfigError, TokenError, UpstreamError
from gateway.hub import PERMISSION_FIX, TokenCheck, TokenStatus, check_token_once
from gateway.refs import ModelRef, parse_ref
from gateway.secret import Secret, mask
from gateway.settings import TOKEN_VARS, Settings, read_env_file
from gateway.store import ConfigEdit, atomic_write, plan_config_update, set_env_var
from gateway.upstream import one_off_session

DEFAULT_MODEL = DEFAULT_PRIMARY
TOKEN_VAR = "HF_TOKEN"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
NEW_TOKEN_HELP = (
    f'create a fine-grained token with "Make calls to Inference Providers" at {TOKENS_PAGE}'
)
_ASSIGNMENT = re.compile(r"^(?:export\s+|set\s+|\$env:)?[A-Za-z_][A-Za-z0-9_]*\s*[=:]\s*(.*)$")
_QUOTES = "\"'`"
_VAR_ONLY = re.compile(r"^\s*\$\{[A-Z_][A-Z0-9_]*\}\s*$")


# ------------------------------------------------------------------------------ pure


def clean_pasted_token(raw: str | None) -> str | None:
    """The token inside what a person pasted; None when nothing is left.

    Accepts ``hf_…``, ``"hf_…"``, ``export HF_TOKEN=hf_…``, ``HF_TOKEN="hf_…"``,
    ``set HF_TOKEN=hf_…``, ``$env:HF_TOKEN="hf_…"``, ``Bearer hf_…``, with stray white space,
    a trailing ``;`` and line breaks.
    """
    if raw is None:
        return None
    text = raw.replace("\r", "").replace("\n", " ").strip()
    m = _ASSIGNMENT.match(text)
    if m:
        text = m.group(1)
    text = text.strip().rstrip(";").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        text = text[1:-1]
    text = text.strip(_QUOTES + " \t")
    if text.lower().startswith("bearer "):
        text = text[len("bearer ") :]
    return text.strip() or None


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be sent in a header, or None when it can."""
    if not all(33 <= ord(ch) < 127 for ch in token):
        return "it contains spaces or characters that cannot be sent in an HTTP header"
    return None


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """One line of the dropdown: ``value`` is the ref saved, ``title`` what is shown/filtered."""

    value: str
    title: str


_VARIANTS: tuple[tuple[str | None, str], ...] = (
    (None, ""),
    ("cheapest", "cheapest provider"),
    ("fastest", "fastest provider"),
)


def display_name(model_id: str, catalog: Catalog) -> str:
    entry = catalog.get(model_id)
    return entry.name if entry and entry.name else model_id.split("/", 1)[-1]


def model_choices(catalog: Catalog, current: ModelRef | None = None) -> list[ModelChoice]:
    """Every catalog model, each also as ``:cheapest`` and ``:fastest``.

    The current default comes first when the catalog does not list it (a provider pin, or a
    model the router no longer serves), marked ``current``.
    """
    choices: list[ModelChoice] = []
    for entry in catalog.entries:
        name = display_name(entry.model_id, catalog)
        for suffix, note in _VARIANTS:
            ref = ModelRef(entry.model_id, suffix)
            mark = ", current" if ref == current else ""
            detail = f"{name}, {note}" if note else name
            choices.append(ModelChoice(str(ref), f"{ref}  ({detail}{mark})"))
    if current is not None and all(c.value != str(current) for c in choices):
        name = display_name(current.model_id, catalog)
        choices.insert(0, ModelChoice(str(current), f"{current}  ({name}, current)"))
    return choices


def alias_for(ref: ModelRef, catalog: Catalog) -> str:
    """``Qwen3 8B``, ``Qwen3 8B (cheapest)``, ``DeepSeek R1 (together)``."""
    name = display_name(ref.model_id, catalog)
    return f"{name} ({ref.suffix})" if ref.suffix else name


def apply_choice(
    data: dict[str, Any], ref: ModelRef, alias: str, port: int | None, notes: list[str]
) -> None:
    """The config edit of onboarding; everything not named here is kept."""
    set_primary(data, ref)
    ensure_alias(data, ref, alias)
    if port is not None:
        ensure_section(data, "gateway")["port"] = port
    _, hf = get_value(data, ("models", "providers", "huggingface"))
    api_key = hf.get("apiKey") if isinstance(hf, dict) else None
    if isinstance(hf, dict) and isinstance(api_key, str) and not _VAR_ONLY.match(api_key):
        del hf["apiKey"]
        notes.append(
            "removed the token written in the config (models.providers.huggingface.apiKey):"
            " it now lives only in the .env file"
        )


@dataclass(frozen=True)
class OnboardResult:
    config_path: Path
    env_file: Path
    token: str  # masked
    check: TokenCheck
    primary: str
    alias: str | None
    fallbacks: tuple[str, ...]
    models_source: str  # "router" | "built-in" | "not loaded"
    host: str
    port: int
    warnings: tuple[str, ...] = ()
    service: str | None = None  # set by the caller after --install-daemon

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def next_step(self) -> str:
        if self.service:
            return "coderclaw gateway status"
        return "coderclaw gateway"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "config": str(self.config_path),
            "envFile": str(self.env_file),
            "token": {
                "masked": self.token,
                "check": self.check.status.value,
                "user": self.check.user,
            },
            "model": {
                "primary": self.primary,
                "alias": self.alias,
                "fallbacks": list(self.fallbacks),
                "listSource": self.models_source,
            },
            "gateway": {"port": self.port, "url": self.url},
            "service": self.service,
            "warnings": list(self.warnings),
            "next": self.next_step,
        }


def summary_lines(result: OnboardResult) -> list[str]:
    """The closing summary for a person."""
    alias = f"  (alias {result.alias!r})" if result.alias else ""
    lines = [
        "",
        "Onboarding complete.",
        f"  config:         {result.config_path}",
        f"  token:          {result.token} saved as {TOKEN_VAR} in {result.env_file} (mode 0600)",
        f"  token check:    {result.check.describe()}",
        f"  default model:  {result.primary}{alias}",
        f"  fallbacks:      {', '.join(result.fallbacks) or '(none)'}",
        f"  endpoint:       {result.url}",
    ]
    if result.service:
        lines.append(f"  service:        {result.service}")
    lines += [f"  warning: {w}" for w in result.warnings]
    lines += ["", "Next step:"]
    if result.service:
        lines.append("  coderclaw gateway status        (the service runs the gateway)")
    else:
        lines.append("  coderclaw gateway               (run it in this terminal)")
        lines.append("  coderclaw gateway install       (or install it as a background service)")
    return lines


# ------------------------------------------------------------------------------- I/O


class Prompter(Protocol):
    """What the interactive flow needs from a terminal."""

    def say(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def confirm(self, question: str, default: bool) -> bool: ...

    def secret(self, question: str) -> str: ...

    def select(self, question: str, choices: list[ModelChoice], default: str | None) -> str: ...


def describe_source(settings: Settings, environ: Mapping[str, str]) -> str:
    """Where the token ``settings`` found comes from, in words."""
    source = settings.token_source or "?"
    if source in TOKEN_VARS:
        if environ.get(source):
            return f"the environment variable {source}"
        if source in read_env_file(settings.paths.env_file):
            return f"{settings.paths.env_file} ({source})"
        return f"the config's env ({source})"
    if source.startswith("config "):
        return f"the config file ({source.removeprefix('config ')})"
    return source


def _timeout(settings: Settings) -> float:
    return settings.config.hf.discovery.timeout_seconds


def check_token_now(settings: Settings, token: Secret) -> TokenCheck:
    return asyncio.run(check_token_once(settings.config.hf.hub_url, token, _timeout(settings)))


async def _fetch(settings: Settings, token: Secret) -> Catalog:
    async with one_off_session() as session:
        return await fetch_models(session, settings.config.hf.base_url, token, _timeout(settings))


def load_catalog(settings: Settings, token: Secret) -> tuple[Catalog, str | None]:
    """The router's models merged with the built-in list, or the built-in list and a note."""
    try:
        catalog = asyncio.run(_fetch(settings, token))
    except UpstreamError as exc:
        return builtin_catalog(), (
            f"Could not load the models from the router ({exc.message}); "
            "showing the built-in list instead."
        )
    with contextlib.suppress(OSError):  # the cache only saves the gateway a first fetch
        save_cached_catalog(settings.paths.cache_file, catalog)
    return catalog, None


def save(settings: Settings, token: Secret, edit: ConfigEdit) -> None:
    """Write the token to ``.env``, then the validated config; undo the first if that fails."""
    env_file = settings.paths.env_file
    before = env_file.read_text(encoding="utf-8") if env_file.exists() else None
    set_env_var(env_file, TOKEN_VAR, token.reveal(), drop=TOKEN_VARS)
    try:
        edit.commit()
    except BaseException:
        if before is None:
            env_file.unlink(missing_ok=True)
        else:
            atomic_write(env_file, before)
        raise


def _finish(
    settings: Settings,
    token: Secret,
    token_check: TokenCheck,
    ref: ModelRef,
    catalog: Catalog,
    models_source: str,
    port: int | None,
    warnings: list[str],
    reload: Callable[[], Settings],
) -> OnboardResult:
    notes: list[str] = []
    alias = alias_for(ref, catalog)
    edit = plan_config_update(
        settings.paths.config, lambda data: apply_choice(data, ref, alias, port, notes)
    )
    save(settings, token, edit)
    warnings += notes
    if edit.changed and loses_formatting(edit.before):
        warnings.append(
            f"{settings.paths.config} was rewritten as plain JSON: its JSON5 comments and "
            "formatting were not kept (every key and value was)"
        )
    final_alias = _alias_of(edit.data, ref)
    after = settings
    try:
        after = reload()
    except ConfigError as exc:
        warnings.append(f"the saved config does not load in this shell: {exc.message}")
    else:
        if after.hf_token is not None and after.hf_token != token:
            warnings.append(
                f"{after.token_source} also holds a token ({mask(after.hf_token.reveal())}) and "
                "takes precedence over the saved one; unset it (or update it) so the gateway "
                "uses the new token"
            )
    return OnboardResult(
        config_path=settings.paths.config,
        env_file=settings.paths.env_file,
        token=mask(token.reveal()),
        check=token_check,
        primary=str(ref),
        alias=final_alias,
        fallbacks=tuple(str(f) for f in fallbacks_of(edit.data)),
        models_source=models_source,
        host=after.host,
        port=port if port is not None else after.port,
        warnings=tuple(warnings),
    )


def _alias_of(data: dict[str, Any], ref: ModelRef) -> str | None:
    for alias, key in alias_list(data):
        try:
            if parse_ref(key) == ref:
                return alias
        except ConfigError:
            continue
    return None


def _check_warning(result: TokenCheck) -> str | None:
    if result.status is TokenStatus.NO_INFERENCE:
        return f"{result.describe()}: chat requests will fail with 403; {PERMISSION_FIX}"
    if result.status is TokenStatus.UNREACHABLE:
        return f"the token {result.describe()}; it is saved unchecked"
    return None


@dataclass
class InteractiveOptions:
    model: str | None = None
    port: int | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None  # --huggingface-api-key: used without asking


def _ask_token(
    settings: Settings, prompter: Prompter, options: InteractiveOptions
) -> tuple[Secret, TokenCheck]:
    candidate: Secret | None = None
    given = clean_pasted_token(options.token)
    found = settings.hf_token
    if given is not None and token_problem(given) is None:
        candidate = Secret(given)
    elif found is not None:
        where = describe_source(settings, options.environ)
        question = f"Use the Hugging Face token found in {where} ({mask(found.reveal())})?"
        if prompter.confirm(question, True):
            candidate = found
    while True:
        if candidate is None:
            raw = prompter.secret("Hugging Face token (input is hidden; paste it, then Enter):")
            text = clean_pasted_token(raw)
            if text is None:
                prompter.warn(f"No token entered. To get one, {NEW_TOKEN_HELP}.")
                continue
            problem = token_problem(text)
            if problem:
                prompter.warn(f"That does not look like a token: {problem}. Paste it again.")
                continue
            candidate = Secret(text)
        prompter.say("Checking the token with Hugging Face…")
        result = check_token_now(settings, candidate)
        if result.status is TokenStatus.REJECTED:
            prompter.warn(
                f"Hugging Face rejected this token ({mask(candidate.reveal())}): "
                f"{result.detail}. Paste it again, or {NEW_TOKEN_HELP}."
            )
            candidate = None
            continue
        warning = _check_warning(result)
        if warning:
            prompter.warn(warning)
        else:
            prompter.say(f"Token {result.describe()}.")
        return candidate, result


def run_interactive(
    settings: Settings,
    prompter: Prompter,
    options: InteractiveOptions,
    reload: Callable[[], Settings],
) -> OnboardResult:
    """Ask for the token and the default model, then save both."""
    prompter.say(f"Config: {settings.paths.config}")
    token, token_check = _ask_token(settings, prompter, options)
    warnings = [w for w in [_check_warning(token_check)] if w]
    if options.model is not None:
        ref = parse_ref(options.model)
        catalog, source = builtin_catalog(), "not loaded"
    else:
        prompter.say("Loading the models from the Hugging Face router…")
        catalog, note = load_catalog(settings, token)
        source = "built-in" if note else "router"
        if note:
            prompter.warn(note)
        current = settings.chain[0]
        choices = model_choices(catalog, current)
        chosen = prompter.select("Default Hugging Face model", choices, str(current))
        ref = parse_ref(chosen)
    return _finish(
        settings, token, token_check, ref, catalog, source, options.port, warnings, reload
    )


def run_non_interactive(
    settings: Settings,
    *,
    token_flag: str | None,
    model: str | None,
    port: int | None,
    reload: Callable[[], Settings],
) -> OnboardResult:
    """The flags-only flow; ``TokenError`` (exit 2) for a missing or rejected token."""
    text = clean_pasted_token(token_flag)
    token: Secret | None
    if text is not None:
        problem = token_problem(text)
        if problem:
            raise TokenError(
                f"the value of --huggingface-api-key is not a token: {problem}",
                hint="copy the token again from " + TOKENS_PAGE,
            )
        token = Secret(text)
    else:
        token = settings.hf_token
    if token is None:
        raise TokenError(
            "no Hugging Face token: set HF_TOKEN, or pass --huggingface-api-key - with the "
            "token on standard input",
            hint="HF_TOKEN=… coderclaw onboard --non-interactive --mode local "
            f"--auth-choice huggingface-api-key; to get a token, {NEW_TOKEN_HELP}",
        )
    ref = parse_ref(model or DEFAULT_MODEL)
    result = check_token_now(settings, token)
    if result.status is TokenStatus.REJECTED:
        raise TokenError(
            f"Hugging Face rejected the token {mask(token.reveal())}: {result.detail}; "
            "nothing was written",
            hint=f"copy the token again, or {NEW_TOKEN_HELP}",
        )
    warnings = [w for w in [_check_warning(result)] if w]
    return _finish(
        settings, token, result, ref, builtin_catalog(), "not loaded", port, warnings, reload
    )
