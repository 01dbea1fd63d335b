"""A router that misbehaves on purpose: endless bodies, gzip bombs, endless SSE lines.

``HostileUpstream`` is a real aiohttp server on 127.0.0.1 port 0 with the two base URLs of
``FakeRouter`` (``url`` for the Hub, ``base_url`` for the router), so ``write_config`` can point
a gateway at it. The model id of a chat request names the misbehaviour (``hostile/<name>``, see
``SCENARIOS``); ``GET /v1/models`` answers with ``models_scenario``. Every answer is generated
as it is sent — nothing of the gigabyte is ever held in memory — and stops when the peer goes
away; ``disconnects`` records when each answer found its peer gone.

Two speeds: ``fast`` sends as quickly as the gateway reads (to test the caps), ``slow`` sends a
piece every 50 ms (so a request is still under way when its client leaves).
"""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.fake_router import default_models

GIB = 1 << 30
PIECE = 256 * 1024
SLOW_PAUSE = 0.05

_FILL = b"a" * PIECE
_SPACES = b" " * PIECE
_CHAT_HEAD = b'{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m",'
_SMALL_ANSWER = (
    _CHAT_HEAD
    + b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
    + b'"finish_reason":"stop"}],'
    + b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
_SSE_HEAD = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
)
_TINY_EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'
)
_TINY_FINISH = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def _endless(head: bytes, fill: bytes, total: int = GIB) -> Iterator[bytes]:
    """``head`` then ``fill`` repeated until ``total`` bytes (a gigabyte: endless in practice)."""
    yield head
    sent = len(head)
    while sent < total:
        yield fill
        sent += len(fill)


@functools.cache
def _gzipped(kind: str) -> tuple[bytes, ...]:
    """The gzip stream of ``_body(kind)`` in 64 KiB pieces, compressed once per test session
    (a gigabyte of one byte is about 5 MB): compressing while sending would hold the
    test's own event loop, which also times the /healthz probes."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    packed = b"".join(packer.compress(piece) for piece in _body(kind)) + packer.flush()
    return tuple(packed[i : i + 65536] for i in range(0, len(packed), 65536))


@dataclass(frozen=True)
class Scenario:
    content_type: str
    gzip: bool
    body: str  # a key of _BODIES


SCENARIOS: dict[str, Scenario] = {
    # A 200 whose JSON body is a gigabyte long (one endless string).
    "json-1g": Scenario("application/json", False, "json-endless"),
    # A small, valid answer followed by a gigabyte of spaces (still valid JSON if read whole).
    "json-padded": Scenario("application/json", False, "json-padded"),
    # A 200 whose gzip body inflates to a gigabyte.
    "gzip-bomb": Scenario("application/json", True, "json-padded"),
    # A stream whose first event never ends (no line break, ever).
    "sse-endless": Scenario("text/event-stream", False, "sse-endless"),
    # The same, gzip-compressed.
    "sse-endless-gzip": Scenario("text/event-stream", True, "sse-endless"),
}


def _body(kind: str) -> Iterator[bytes]:
    if kind == "json-endless":
        return _endless(_CHAT_HEAD + b'"choices":[{"message":{"content":"', _FILL)
    if kind == "json-padded":
        return _endless(_SMALL_ANSWER, _SPACES)
    if kind == "sse-endless":
        return _endless(_SSE_HEAD, _FILL)
    raise ValueError(kind)


@dataclass
class Sent:
    """One answer as it went: what was asked, how much was sent, and when the peer was gone."""

    path: str
    model: str | None
    started: float
    bytes_sent: int = 0
    gone_at: float | None = None  # when a write found the peer gone
    finished: bool = False  # the whole body was sent


@dataclass
class HostileUpstream:
    speed: str = "fast"  # or "slow"
    models_scenario: str = "ok"  # what GET /v1/models answers: "ok" or a SCENARIOS name
    tiny_events: int = 0  # a chat model ``hostile/tiny`` streams this many one-letter events
    sent: list[Sent] = field(default_factory=list)
    url: str = ""
    base_url: str = ""

    async def __aenter__(self) -> HostileUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    def chat_requests(self) -> list[Sent]:
        return [s for s in self.sent if s.path.endswith("/chat/completions")]

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if self.models_scenario == "ok":
            self.sent.append(Sent(request.path, None, time.monotonic(), finished=True))
            return web.json_response({"object": "list", "data": default_models()})
        return await self._send(request, None, SCENARIOS[self.models_scenario])

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", ""))
        name = model.split(":", 1)[0].removeprefix("hostile/")
        if name == "tiny":
            return await self._pieces(
                request, model, [_TINY_EVENT * 100] * (self.tiny_events // 100)
            )
        return await self._send(request, model, SCENARIOS[name])

    async def _send(
        self, request: web.Request, model: str | None, scenario: Scenario
    ) -> web.StreamResponse:
        record = Sent(request.path, model, time.monotonic())
        self.sent.append(record)
        headers = {"Content-Type": scenario.content_type, "x-inference-provider": "hostile"}
        if scenario.gzip:
            headers["Content-Encoding"] = "gzip"
        out = web.StreamResponse(status=200, headers=headers)
        await out.prepare(request)
        pieces = _gzipped(scenario.body) if scenario.gzip else _body(scenario.body)
        try:
            for piece in pieces:
                await out.write(piece)
                record.bytes_sent += len(piece)
                await asyncio.sleep(SLOW_PAUSE if self.speed == "slow" else 0)
            await out.write_eof()
            record.finished = True
        except (ConnectionError, RuntimeError):
            pass
        finally:  # a write that failed, or the handler cancelled as its peer left
            if not record.finished:
                record.gone_at = time.monotonic()
        return out

    async def _pieces(
        self, request: web.Request, model: str, pieces: list[bytes]
    ) -> web.StreamResponse:
        """A stream of ``pieces`` (one write each), then a finish chunk and ``[DONE]``."""
        record = Sent(request.path, model, time.monotonic())
        self.sent.append(record)
        out = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "x-inference-provider": "hostile"},
        )
        await out.prepare(request)
        try:
            for piece in pieces:
                await out.write(piece)
                record.bytes_sent += len(piece)
                await asyncio.sleep(0)
            await out.write(_TINY_FINISH)
            await out.write_eof()
            record.finished = True
        except (ConnectionError, RuntimeError):
            pass
        finally:  # a write that failed, or the handler cancelled as its peer left
            if not record.finished:
                record.gone_at = time.monotonic()
        return out
