"""A faithful fake of the Hugging Face Inference Providers router and the Hub token check.

``FakeRouter`` is a real aiohttp server on 127.0.0.1 port 0. Tests script answers per model with
``Reply`` values and read back everything the server received (``requests``, ``disconnects``).
Shapes, headers, error bodies and streaming quirks follow ``/work/shared/HF_ROUTER_FACTS.md``.

Routes:
    GET  /v1/models                   the OpenAI list with HF per-provider metadata
    GET  /v1/models/{org}/{name}      one entry (also ``org%2Fname``); unknown -> 404 object error
    POST /v1/chat/completions         auth, model check, then the next scripted ``Reply``
    GET  /api/whoami-v2               the Hub token check
    anything else                     404
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

PERMISSION = "inference.serverless.write"
POLICIES = frozenset({"fastest", "cheapest", "preferred"})
USER_NAME = "coderclaw-tester"

MSG_BAD_TOKEN = "Invalid username or password."
MSG_HUB_BAD_TOKEN = "Invalid credentials in Authorization header"
MSG_NO_PERMISSION = (
    "This authentication method does not have sufficient permissions to call Inference "
    "Providers on behalf of user {user}"
)
MSG_CREDITS = (
    "You have depleted your monthly included credits. Purchase pre-paid credits to continue "
    "using Inference Providers. Alternatively, subscribe to PRO to get 20x more included usage."
)
MSG_NOT_SUPPORTED = (
    "The requested model '{model}' is not supported by any provider you have enabled."
)
MSG_DEPRECATED = (
    "The requested model is deprecated and no longer supported by provider '{provider}'."
)
WWW_AUTHENTICATE = 'Bearer realm="Authentication required"'

_CODE_MESSAGES = {
    "model_not_supported": MSG_NOT_SUPPORTED,
    "model_not_found": "The requested model '{model}' does not exist.",
    "context_length_exceeded": (
        "This model's maximum context length is 32768 tokens. However, you requested 40960 "
        "tokens. Please reduce the length of the messages or completion."
    ),
    "content_policy_violation": ("Your request was rejected as a result of our safety system."),
}
_CODE_PARAMS = {
    "model_not_supported": "model",
    "model_not_found": "model",
    "context_length_exceeded": "messages",
}
_STATUS_MESSAGES = {
    401: MSG_BAD_TOKEN,
    402: MSG_CREDITS,
    403: MSG_NO_PERMISSION,
    410: MSG_DEPRECATED,
    429: "Rate limit reached for requests. Please try again later.",
    500: "Internal server error",
    502: "Bad gateway: the upstream provider returned an invalid response",
    503: "Service temporarily unavailable: the upstream provider is overloaded",
    504: "Gateway timeout: the upstream provider did not answer in time",
}
_STRING_STATUSES = frozenset({401, 402, 403})
_TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'


@dataclass(frozen=True)
class ToolCall:
    """One scripted tool call of a ``Reply``.

    ``arguments`` is the JSON text the model "writes" (a dict is dumped to it); a stream sends
    it in ``chunks`` pieces, the first with the call's ``id``, ``type`` and ``name``, the rest
    as ``{"index": i, "function": {"arguments": piece}}`` deltas, as OpenAI-style providers do
    (``chunks=1`` is Groq's whole call in one chunk). ``id`` None: a fresh ``call_<hex>``.
    """

    name: str
    arguments: str | dict[str, Any] = "{}"
    chunks: int = 1
    id: str | None = None

    @property
    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """One scripted answer to a chat completion.

    Stream counters (``stall_after``, ``drop_after``, ``error_event_after``,
    ``non_json_event_after``) count body chunks: content pieces, or tool-call pieces when
    ``tool_calls``. A count at or past the last piece fires just before the finish chunk.

    ``tool_calls=True`` answers one ``get_weather`` call split over ``chunks`` pieces; a list of
    ``ToolCall`` answers those calls in order (indexes 0, 1, …), with ``text_before`` /
    ``text_after`` streamed as one content chunk each around them. Either way the finish reason
    is ``tool_calls``. Queue a tool-call reply and then a text reply with ``script`` to drive an
    agent through a tool turn.
    """

    status: int = 200
    # Body shape for status >= 400. None: what the router uses for that status, a plain string
    # ``{"error": "..."}`` for 401/402/403 and an OpenAI error object otherwise.
    error_shape: Literal["object", "string", "html", "text"] | None = None
    # None: the real HF wording for the code or status; ``{model}`` is the id as sent.
    error_message: str | None = None
    # Object code. None: ``model_not_supported`` for 400, ``model_not_found`` for 404, else
    # null; ``""`` forces null.
    error_code: str | None = None
    retry_after: str | None = None  # Retry-After header, on errors and successes alike
    delay_first_byte: float = 0.0  # seconds before the status line
    chunks: int = 3  # content split into this many stream chunks
    content: str = "Hello from {model}"  # ``{model}``: the id without suffix
    chunk_delay: float = 0.0  # seconds before every stream event but the first
    stall_after: int | None = None  # then hang until the client goes away
    drop_after: int | None = None  # then reset the TCP connection (no terminator, no [DONE])
    error_event_after: int | None = None  # then ``data: {"error": {...}}`` and end, no [DONE]
    done: bool = True  # end the stream with ``data: [DONE]``
    finish_reason: str | None = "stop"  # None: the final chunk has ``finish_reason: null``
    # "last": usage on the finish chunk (Together); "separate": a ``choices: []`` chunk before
    # [DONE] when the request set ``stream_options.include_usage``; "none": no usage anywhere.
    usage: Literal["last", "separate", "none"] = "last"
    reasoning: Literal["reasoning_content", "reasoning", None] = None  # reasoning delta first
    non_json_event_after: int | None = None  # then ``data: this is not json`` and carry on
    provider: str = "together"  # x-inference-provider, unless the id pins ``:<provider>``
    tool_calls: bool | Sequence[ToolCall] = False  # see the class docstring
    text_before: str = ""  # with a list of tool_calls: content before the calls
    text_after: str = ""  # with a list of tool_calls: content after the calls
    repeat: bool = False  # stay at the head of the queue forever
    # A request ending with an assistant message (a prefill): ``continue_prefill`` streams the
    # rest of ``content`` after that text when ``content`` starts with it (a model that
    # continues the final message); ``reject_prefill`` answers Anthropic's 400 instead.
    continue_prefill: bool = False
    reject_prefill: bool = False
    location: str | None = None  # with a 3xx ``status``: the redirect's target, no body


@dataclass
class ModelsReply:
    """How ``GET /v1/models`` answers: status N (string error), non-JSON 200, delay, or a body."""

    status: int = 200
    invalid_json: bool = False
    delay: float = 0.0
    body_override: Any = None


@dataclass
class Recorded:
    """One request as received; recorded before any scripted delay or error."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any
    model: str | None
    time: float
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # the client's port: which connection the request came on

    @property
    def bare_model(self) -> str | None:
        """The sent model id without its ``:suffix``."""
        return None if self.model is None else _bare(self.model)

    @property
    def token(self) -> str | None:
        """The Bearer token sent, if any."""
        return _bearer(self.headers.get("Authorization"))


_PROVIDER_STATS: dict[str, dict[str, Any]] = {
    "novita": {
        "context_length": 131072,
        "pricing": (0.6, 2.4),
        "structured": False,
        "latency": 1341.8,
        "throughput": 35.75,
    },
    "together": {
        "context_length": 131072,
        "pricing": (0.9, 2.7),
        "structured": True,
        "latency": 611.0,
        "throughput": 40.13,
    },
    "fireworks-ai": {
        "context_length": 163840,
        "pricing": None,
        "structured": True,
        "latency": 588.4,
        "throughput": 45.43,
    },
    "groq": {
        "context_length": 131072,
        "pricing": (0.15, 0.6),
        "structured": True,
        "latency": 210.5,
        "throughput": 480.2,
    },
    "cerebras": {
        "context_length": 65536,
        "pricing": (0.25, 0.69),
        "structured": True,
        "latency": 180.3,
        "throughput": 1650.7,
    },
    "deepinfra": {
        "context_length": 65536,
        "pricing": (0.27, 1.0),
        "structured": True,
        "latency": 525.8,
        "throughput": 34.62,
    },
    "nscale": {
        "context_length": 40960,
        "pricing": (0.07, 0.2),
        "structured": False,
        "latency": 902.1,
        "throughput": 60.4,
    },
    "zai-org": {
        "context_length": 204800,
        "pricing": (0.6, 2.2),
        "structured": True,
        "latency": 1620.0,
        "throughput": 52.9,
    },
}


def make_model_entry(
    model_id: str,
    providers: Sequence[str | dict[str, Any]] = ("together",),
    *,
    created: int = 1_745_000_000,
    input_modalities: Sequence[str] = ("text",),
) -> dict[str, Any]:
    """Build one ``/v1/models`` entry like §1.2 of the facts.

    A provider given as a slug gets plausible stats (``featherless-ai`` and unknown slugs get only
    the required keys, ``fireworks-ai`` no pricing, like the real sample); a dict is used as is,
    with ``status`` and ``is_model_author`` filled in when missing.
    """
    org = model_id.split("/", 1)[0]
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": org,
        "architecture": {
            "input_modalities": list(input_modalities),
            "output_modalities": ["text"],
        },
        "providers": [_provider_entry(model_id, p) for p in providers],
    }


def _provider_entry(model_id: str, spec: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        return {"status": "live", "is_model_author": False, **spec}
    entry: dict[str, Any] = {"provider": spec, "status": "live"}
    stats = _PROVIDER_STATS.get(spec)
    if stats is not None:
        # Small per-model jitter so policies (fastest/cheapest) have distinct answers.
        jitter = 1 + (zlib.crc32(f"{model_id}:{spec}".encode()) % 20) / 100
        entry["context_length"] = stats["context_length"]
        if stats["pricing"] is not None:
            price_in, price_out = stats["pricing"]
            entry["pricing"] = {
                "input": round(price_in * jitter, 3),
                "output": round(price_out * jitter, 3),
            }
        entry["supports_tools"] = True
        entry["supports_structured_output"] = stats["structured"]
        entry["first_token_latency_ms"] = round(stats["latency"] * jitter, 1)
        entry["throughput"] = round(stats["throughput"] * jitter, 4)
    entry["is_model_author"] = spec == model_id.split("/", 1)[0]
    return entry


def default_models() -> list[dict[str, Any]]:
    """The ten models of the provider page, one model outside it, and ``org/model-a``/``-b``."""
    glm_flash = make_model_entry(
        "zai-org/GLM-5.3-Flash", ["novita", "zai-org"], created=1_787_640_194
    )
    glm_flash["providers"][0]["is_free"] = False
    return [
        make_model_entry(
            "deepseek-ai/DeepSeek-R1", ["novita", "together", "fireworks-ai"], created=1_737_363_000
        ),
        make_model_entry(
            "deepseek-ai/DeepSeek-V3.2",
            ["novita", "fireworks-ai", "deepinfra"],
            created=1_764_547_200,
        ),
        make_model_entry("Qwen/Qwen3-8B", ["featherless-ai", "nscale"], created=1_745_888_000),
        make_model_entry(
            "Qwen/Qwen2.5-7B-Instruct", ["together", "featherless-ai"], created=1_726_600_000
        ),
        make_model_entry(
            "Qwen/Qwen3-32B", ["groq", "nscale", "featherless-ai"], created=1_745_888_100
        ),
        make_model_entry(
            "meta-llama/Llama-3.3-70B-Instruct",
            ["groq", "together", "novita"],
            created=1_733_443_000,
        ),
        make_model_entry(
            "meta-llama/Llama-3.1-8B-Instruct",
            ["cerebras", "novita", "featherless-ai"],
            created=1_721_300_000,
        ),
        make_model_entry(
            "openai/gpt-oss-120b", ["groq", "cerebras", "together"], created=1_754_400_000
        ),
        make_model_entry("zai-org/GLM-4.7", ["zai-org", "novita"], created=1_766_000_000),
        make_model_entry(
            "moonshotai/Kimi-K2.5",
            ["together", "novita"],
            created=1_769_500_000,
            input_modalities=("text", "image"),
        ),
        glm_flash,
        make_model_entry("org/model-a", ["together"]),
        make_model_entry("org/model-b", ["groq", "novita"]),
    ]


def _bare(model: str) -> str:
    return model.split(":", 1)[0]


def _client_port(transport: asyncio.BaseTransport | None) -> int | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[1] if peer else None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _fill(template: str, *, model: str = "", provider: str = "") -> str:
    """Substitute the ``{model}``/``{provider}``/``{user}`` slots, leaving other braces alone."""
    return (
        template.replace("{model}", model)
        .replace("{provider}", provider)
        .replace("{user}", USER_NAME)
    )


def _html_page(status: int, detail: str | None = None) -> str:
    title = f"{status} {_phrase(status)}"
    extra = f"<p>{detail}</p>\r\n" if detail else ""
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n{extra}</body>\r\n</html>\r\n"
    )


def _error_response(reply: Reply, *, model: str, headers: dict[str, str]) -> web.Response:
    """Render a scripted error in the body shape the reply asks for."""
    status = reply.status
    code = reply.error_code
    if code is None:
        code = {400: "model_not_supported", 404: "model_not_found"}.get(status, "")
    template = (
        reply.error_message
        or _CODE_MESSAGES.get(code)
        or _STATUS_MESSAGES.get(status)
        or _phrase(status)
    )
    message = _fill(template, model=model, provider=reply.provider)
    if status == 401:
        headers["www-authenticate"] = WWW_AUTHENTICATE
    shape = reply.error_shape or ("string" if status in _STRING_STATUSES else "object")
    if shape == "html":
        return web.Response(
            status=status,
            text=_html_page(status, reply.error_message),
            content_type="text/html",
            headers=headers,
        )
    if shape == "text":
        return web.Response(status=status, text=message, content_type="text/plain", headers=headers)
    if shape == "string":
        return _json_response(status, {"error": message}, headers)
    error = {
        "message": message,
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": _CODE_PARAMS.get(code),
        "code": code or None,
    }
    return _json_response(status, {"error": error}, headers)


def _object_error(status: int, message: str, code: str | None, param: str | None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _json_response(status, {"error": error})


def _count_words(messages: Any) -> int:
    words = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(
                len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict)
            )
    return max(words, 1)


# Anthropic's wording (Claude 4.6+) for a request ending with an assistant message.
MSG_NO_PREFILL = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)


def _prefill(body: dict[str, Any]) -> str | None:
    """The text of a final assistant message (a prefill), or None."""
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        content = last.get("content")
        return content if isinstance(content, str) else None
    return None


def _split(text: str, pieces: int) -> list[str]:
    size = len(text)
    return [text[i * size // pieces : (i + 1) * size // pieces] for i in range(pieces)]


class _Abort(Exception):
    """Raised inside a stream to end the handler after we aborted the connection ourselves."""


class FakeRouter:
    """The fake router + Hub; use ``async with FakeRouter() as router:`` and point at its URLs.

    ``url`` is the Hub base (``hubUrl``), ``base_url`` the router base (``baseUrl``).
    """

    def __init__(
        self,
        *,
        models: list[dict[str, Any]] | None = None,
        tokens: set[str] | None = None,
        require_auth: bool = False,
        no_inference_tokens: set[str] | None = None,
    ) -> None:
        self.models: list[dict[str, Any]] = default_models() if models is None else models
        self.tokens: set[str] = set(tokens or ())
        self.no_inference_tokens: set[str] = set(no_inference_tokens or ())
        self.require_auth = require_auth
        self.models_reply = ModelsReply()
        self.whoami_delay = 0.0  # seconds before the Hub answers whoami-v2 (a slow round trip)
        self.requests: list[Recorded] = []
        self.disconnects: list[tuple[str, float]] = []
        self.url = ""
        self.base_url = ""
        self._scripts: dict[str, list[Reply]] = {}
        self._default = Reply()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._disconnect_seen = asyncio.Event()
        self._disconnects_taken = 0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port; handlers are cancelled when a client goes away."""
        app = web.Application(middlewares=[self._record])
        app.on_response_prepare.append(self._router_headers)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model_id:.+}", self._get_model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/api/whoami-v2", self._whoami)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    async def close(self) -> None:
        """Stop promptly, cancelling stalled handlers without counting them as disconnects."""
        self._closing = True
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ scripting
    def script(self, model: str, *replies: Reply) -> None:
        """Queue replies for a bare id (any suffix) or an exact ``org/m:suffix`` id.

        A scripted id counts as a served model even when it is not in ``models``.
        """
        self._scripts.setdefault(model, []).extend(replies)

    def clear(self, model: str) -> None:
        """Drop the replies queued for ``model`` (it answers the default from now on)."""
        self._scripts.pop(model, None)

    def set_default(self, reply: Reply) -> None:
        """The reply used once a model's queue is empty (initially ``Reply()``)."""
        self._default = reply

    def _next_reply(self, sent: str) -> Reply:
        for key in (sent, _bare(sent)):
            queue = self._scripts.get(key)
            if queue:
                return queue[0] if queue[0].repeat else queue.pop(0)
        return self._default

    def _is_served(self, sent: str) -> bool:
        bare = _bare(sent)
        return (
            sent in self._scripts
            or bare in self._scripts
            or any(m.get("id") == bare for m in self.models)
        )

    # ------------------------------------------------------------------- queries
    def chat_requests(self, model: str | None = None) -> list[Recorded]:
        """Chat completion requests, optionally only those whose sent model equals ``model``."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.path == "/v1/chat/completions"
            and (model is None or r.model == model)
        ]

    def count(self, model: str) -> int:
        """How many chat requests were sent for ``model``, whatever suffix they carried."""
        return sum(
            1
            for r in self.chat_requests()
            if r.model is not None and (r.bare_model == model or r.model == model)
        )

    @property
    def models_calls(self) -> list[Recorded]:
        """Every ``GET /v1/models`` received."""
        return [r for r in self.requests if r.method == "GET" and r.path == "/v1/models"]

    async def wait_disconnect(self, timeout: float) -> tuple[str, float]:  # noqa: ASYNC109
        """Return the next client disconnect not yet returned; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.disconnects) <= self._disconnects_taken:
                self._disconnect_seen.clear()
                await self._disconnect_seen.wait()
        self._disconnects_taken += 1
        return self.disconnects[self._disconnects_taken - 1]

    def connection_ports(self) -> set[int]:
        """The client ports of the connections open to the router now."""
        server = self._runner.server if self._runner is not None else None
        ports = (_client_port(conn.transport) for conn in (server.connections if server else ()))
        return {port for port in ports if port is not None}

    def _note_disconnect(self, model: str) -> None:
        if not self._closing:
            self.disconnects.append((model, time.monotonic()))
            self._disconnect_seen.set()

    # ---------------------------------------------------------------- middleware
    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request (headers, raw and JSON body) before anything can delay it."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                headers=CIMultiDict(request.headers),
                json=body,
                model=model if isinstance(model, str) else None,
                time=time.monotonic(),
                body=raw,
                query=dict(request.query),
                port=_client_port(request.transport),
            )
        )
        return await handler(request)

    async def _router_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Stamp router-wide headers on every ``/v1`` answer, errors included."""
        if not request.path.startswith("/v1"):
            return
        trace = request.headers.get("X-Amzn-Trace-Id") or str(uuid.uuid4())
        response.headers["x-request-id"] = (
            f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};{trace}"
        )
        response.headers["access-control-allow-origin"] = "*"
        response.headers["x-powered-by"] = "huggingface-moon"

    # -------------------------------------------------------------------- auth
    def _token_valid(self, token: str | None) -> bool:
        if token is None:
            return False
        if token in self.no_inference_tokens:
            return True
        return token in self.tokens if self.tokens else token.startswith("hf_")

    def _auth_error(self, request: web.Request) -> web.Response | None:
        """The router's auth answer: HTML 401 without header, string 401/403 otherwise."""
        header = request.headers.get("Authorization")
        if header is None:
            return web.Response(status=401, text=_html_page(401), content_type="text/html")
        token = _bearer(header)
        if not self._token_valid(token):
            return _json_response(
                401, {"error": MSG_BAD_TOKEN}, {"www-authenticate": WWW_AUTHENTICATE}
            )
        if token in self.no_inference_tokens:
            return _json_response(403, {"error": _fill(MSG_NO_PERMISSION)})
        return None

    # ------------------------------------------------------------------ models
    async def _list_models(self, request: web.Request) -> web.Response:
        """The OpenAI list; query params ignored; knobs in ``models_reply``."""
        knobs = self.models_reply
        if self.require_auth and not self._token_valid(
            _bearer(request.headers.get("Authorization"))
        ):
            return _json_response(
                401, {"error": MSG_BAD_TOKEN}, {"www-authenticate": WWW_AUTHENTICATE}
            )
        if knobs.delay:
            await asyncio.sleep(knobs.delay)
        if knobs.status != 200:
            message = _STATUS_MESSAGES.get(knobs.status) or _phrase(knobs.status)
            return _json_response(knobs.status, {"error": _fill(message)})
        if knobs.invalid_json:
            return web.Response(text="this is not json {", content_type="application/json")
        if knobs.body_override is not None:
            body = knobs.body_override
            text = (
                body.decode()
                if isinstance(body, bytes)
                else (body if isinstance(body, str) else json.dumps(body))
            )
            return web.Response(text=text, content_type="application/json")
        return _json_response(200, {"object": "list", "data": self.models})

    async def _get_model(self, request: web.Request) -> web.Response:
        """One entry, for ``org/name`` and ``org%2Fname`` alike."""
        model_id = unquote(request.raw_path.split("?", 1)[0][len("/v1/models/") :])
        for entry in self.models:
            if entry.get("id") == model_id:
                return _json_response(200, entry)
        return _object_error(
            404, f"The model '{model_id}' does not exist.", "model_not_found", "model"
        )

    # --------------------------------------------------------------------- hub
    async def _whoami(self, request: web.Request) -> web.Response:
        """The Hub whoami-v2 for a fine-grained token; 401 string error otherwise."""
        if self.whoami_delay:
            await asyncio.sleep(self.whoami_delay)
        token = _bearer(request.headers.get("Authorization"))
        if not self._token_valid(token):
            return _json_response(401, {"error": MSG_HUB_BAD_TOKEN})
        permissions = ["repo.content.read", "discussion.write"]
        if token not in self.no_inference_tokens:
            permissions.append(PERMISSION)
        return _json_response(
            200,
            {
                "type": "user",
                "id": "64f0c0ffee0ddba11c0ffee0",
                "name": USER_NAME,
                "fullname": "CoderClaw Tester",
                "email": "tester@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "/avatars/0000000000000000000000000000000.svg",
                "billingMode": "prepaid",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "coderclaw",
                        "role": "fineGrained",
                        "createdAt": "2026-01-01T00:00:00.000Z",
                        "fineGrained": {
                            "canReadGatedRepos": False,
                            "global": permissions,
                            "scoped": [],
                        },
                    },
                },
            },
        )

    # -------------------------------------------------------------------- chat
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """Auth first, then the model check, then the next scripted reply for the model."""
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _object_error(400, "Request body must be a JSON object.", None, None)
        sent = body.get("model")
        if not isinstance(sent, str) or not sent:
            return _object_error(400, "The 'model' field is required.", None, "model")
        if not self._is_served(sent):
            return _object_error(
                400, _fill(MSG_NOT_SUPPORTED, model=sent), "model_not_supported", "model"
            )
        reply = self._next_reply(sent)
        if reply.reject_prefill and _prefill(body) is not None:
            return _object_error(400, MSG_NO_PREFILL, None, None)
        suffix = sent.partition(":")[2]
        provider = suffix if suffix and suffix not in POLICIES else reply.provider
        headers = {"x-inference-provider": provider}
        if reply.retry_after is not None:
            headers["retry-after"] = reply.retry_after
        turn = _Turn(self, request, body, reply, sent, provider, headers)
        try:
            return await turn.run()
        except asyncio.CancelledError:
            if not turn.aborted:
                self._note_disconnect(sent)
            raise


class _Turn:
    """Performs one scripted reply for one chat request."""

    def __init__(
        self,
        router: FakeRouter,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        sent: str,
        provider: str,
        headers: dict[str, str],
    ) -> None:
        self.router = router
        self.request = request
        self.body = body
        self.reply = reply
        self.sent = sent
        self.model = _bare(sent)
        self.provider = provider
        self.headers = headers
        self.aborted = False
        self.id = f"{uuid.uuid4().hex[:7]}-{uuid.uuid4().hex[:16]}"
        self.created = int(time.time())
        self.content = reply.content.replace("{model}", self.model)
        prefill = _prefill(body) if reply.continue_prefill else None
        if prefill is not None and self.content.startswith(prefill):
            self.content = self.content[len(prefill) :]
        self.together = provider == "together"
        self.calls = self._scripted_calls()

    def _scripted_calls(self) -> list[tuple[str, ToolCall]]:
        """(call id, call) of a reply scripted with a list of ``ToolCall``."""
        if isinstance(self.reply.tool_calls, bool):
            return []
        return [
            (call.id or f"call_{uuid.uuid4().hex[:24]}", call) for call in self.reply.tool_calls
        ]

    def _text(self, text: str) -> str:
        return text.replace("{model}", self.model)

    async def run(self) -> web.StreamResponse:
        reply = self.reply
        if reply.delay_first_byte:
            await asyncio.sleep(reply.delay_first_byte)
        if reply.location is not None:
            headers = {**self.headers, "Location": reply.location}
            return web.Response(status=reply.status, headers=headers)
        if reply.status >= 400:
            return _error_response(reply, model=self.sent, headers=self.headers)
        if self.body.get("stream"):
            return await self._stream()
        return _json_response(reply.status, self._completion(), self.headers)

    def _finish(self) -> str | None:
        if self.reply.tool_calls and self.reply.finish_reason is not None:
            return "tool_calls"
        return self.reply.finish_reason

    def _usage(self) -> dict[str, Any]:
        prompt = _count_words(self.body.get("messages"))
        if self.calls:
            text = f"{self.reply.text_before} {self.reply.text_after}"
            completion = len(text.split()) + sum(
                max(len(c.arguments_text) // 4, 1) for _, c in self.calls
            )
        else:
            completion = 12 if self.reply.tool_calls else max(len(self.content.split()), 1)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if self.together:
            usage["cached_tokens"] = 0
        return usage

    def _tool_call(self, arguments: str, *, head: bool) -> dict[str, Any]:
        call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
        if head:
            call["id"] = f"call_{self.id[-12:]}"
            call["type"] = "function"
            call["function"] = {"name": "get_weather", "arguments": arguments}
        return call

    def _completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "tool_calls": []}
        if self.calls:
            text = self._text(self.reply.text_before + self.reply.text_after)
            message["content"] = text or None
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_text},
                }
                for call_id, c in self.calls
            ]
        elif self.reply.tool_calls:
            message["content"] = None
            message["tool_calls"] = [self._tool_call(_TOOL_ARGUMENTS, head=True)]
            del message["tool_calls"][0]["index"]
        if self.reply.reasoning:
            message[self.reply.reasoning] = f"Thinking about it ({self.model})."
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": self._finish(),
            "logprobs": None,
            "message": message,
        }
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fake-router-1",
        }
        if self.together:
            body["prompt"] = []
            choice["seed"] = 3629048360264764400
        body["choices"] = [choice]
        if self.reply.usage != "none":
            body["usage"] = self._usage()
        return body

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
    ) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if self.together:
            choice["text"] = delta.get("content") or ""
            choice["seed"] = None if finish is None else 7228414683750928000
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fake-router-1",
            "choices": [choice],
            "usage": usage,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _body_deltas(self) -> list[dict[str, Any]]:
        pieces = max(self.reply.chunks, 0)
        if self.calls:
            return self._scripted_deltas()
        if self.reply.tool_calls:
            args = _split(_TOOL_ARGUMENTS, max(pieces, 1))
            return [{"tool_calls": [self._tool_call(a, head=i == 0)]} for i, a in enumerate(args)]
        return [{"content": piece} for piece in _split(self.content, pieces)] if pieces else []

    def _scripted_deltas(self) -> list[dict[str, Any]]:
        """Text before, each call's argument pieces (the first with id/type/name), text after."""
        deltas: list[dict[str, Any]] = []
        if self.reply.text_before:
            deltas.append({"content": self._text(self.reply.text_before)})
        for index, (call_id, call) in enumerate(self.calls):
            for piece, arguments in enumerate(_split(call.arguments_text, max(call.chunks, 1))):
                delta: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
                if piece == 0:
                    delta = {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                deltas.append({"tool_calls": [delta]})
        if self.reply.text_after:
            deltas.append({"content": self._text(self.reply.text_after)})
        return deltas

    async def _stream(self) -> web.StreamResponse:
        """Write the SSE stream, applying the scripted faults at their chunk counts."""
        reply = self.reply
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(status=reply.status, headers=self.headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["cache-control"] = "no-cache, no-transform"
        await response.prepare(self.request)
        deltas = self._body_deltas()
        first = True

        async def send(data: bytes) -> None:
            nonlocal first
            if reply.chunk_delay and not first:
                await asyncio.sleep(reply.chunk_delay)
            first = False
            await response.write(data)

        try:
            if reply.reasoning:
                await send(
                    self._chunk(
                        {
                            "role": "assistant",
                            "content": "",
                            reply.reasoning: f"Thinking about it ({self.model}).",
                        }
                    )
                )
            for index in range(len(deltas) + 1):
                if await self._fault(index, len(deltas), send):
                    response.force_close()
                    return response
                if index == len(deltas):
                    break
                delta = deltas[index]
                if first:
                    delta = {"role": "assistant", **delta}
                await send(self._chunk(delta))
            final: dict[str, Any] = {"content": ""} if not reply.tool_calls else {}
            if first:
                final = {"role": "assistant", **final}
            last_usage = self._usage() if reply.usage == "last" else None
            await send(self._chunk(final, self._finish(), last_usage))
            if reply.usage == "separate" and include_usage:
                usage_chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self._usage(),
                }
                await send(f"data: {json.dumps(usage_chunk)}\n\n".encode())
            if reply.done:
                await send(b"data: [DONE]\n\n")
        except ConnectionResetError:
            self.router._note_disconnect(self.sent)
        except _Abort:
            pass
        return response

    async def _fault(self, sent: int, total: int, send: Any) -> bool:
        """Apply the fault scheduled after ``sent`` body chunks; True when the stream ends."""
        reply = self.reply

        def due(after: int | None) -> bool:
            return after is not None and min(after, total) == sent

        if due(reply.non_json_event_after):
            await send(b"data: this is not json\n\n")
        if due(reply.error_event_after):
            error = {
                "message": reply.error_message or "The upstream provider failed mid-stream",
                "type": "server_error",
            }
            await send(f"data: {json.dumps({'error': error})}\n\n".encode())
            return True
        if due(reply.drop_after):
            await self._abort()
        if due(reply.stall_after):
            await asyncio.get_running_loop().create_future()
        return False

    async def _abort(self) -> None:
        """Flush what was written, then reset the TCP connection (no chunked terminator)."""
        transport = self.request.transport
        self.aborted = True
        if transport is not None:
            for _ in range(100):
                if transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.005)
            transport.abort()
        raise _Abort
