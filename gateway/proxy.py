"""One chat completion through the chain: attempts, retries, failover, honest streaming.

The decisions are ``routing``'s; this module does the I/O. A stream is committed to the client
only when the first upstream chunk has arrived, so every failure before it fails over
invisibly; a failure after it ends the client's stream with an SSE error event and no
``[DONE]``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway import wire
from gateway.metrics import Metrics
from gateway.observe import SecretRedactor, batched_writes, get_logger
from gateway.refs import ModelRef
from gateway.routing import (
    Action,
    Cooldowns,
    Failure,
    chain_failure,
    classify,
    decide,
    parse_retry_after,
    plan_chain,
)
from gateway.settings import Settings
from gateway.upstream import Upstream

log = get_logger("gateway.proxy")
# Upstream replies arrive in bursts, and every microsecond spent between a reply and its answer
# delays the rest of the burst: a finished request's log line and counters wait this long, then
# go out with the others finished meanwhile (one write). /metrics and shutdown flush them first.
LOG_DELAY = 0.02

SSE_DONE = b"data: [DONE]\n\n"
MAX_ERROR_BODY = 64 * 1024
ERROR_WRITE_SECONDS = 2.0

ACCOUNT_MESSAGES = {
    401: (
        "Hugging Face rejected the token: run `coderclaw onboard` to set a valid one",
        "invalid_api_key",
    ),
    402: (
        "Hugging Face credits exhausted: buy pre-paid credits or subscribe to PRO at "
        "https://huggingface.co/settings/billing, then retry",
        "insufficient_quota",
    ),
    403: (
        "the Hugging Face token may not call Inference Providers: create a fine-grained token "
        "with 'Make calls to Inference Providers' and run `coderclaw onboard`",
        "permission_denied",
    ),
}


@dataclass(slots=True)
class AttemptLog:
    ref: ModelRef
    status: int | None
    failure: Failure | None
    ms: float

    @property
    def label(self) -> str:
        outcome = self.failure.value if self.failure else str(self.status)
        return f"{self.ref}={outcome}"


@dataclass(slots=True)
class ChatContext:
    """Everything one request carries through its attempts."""

    request: web.Request
    request_id: str
    settings: Settings
    body: dict[str, Any]
    stream: bool
    chain: list[ModelRef]
    started: float = field(default_factory=time.monotonic)
    attempt_started: float = 0.0  # monotonic start of the attempt under way
    attempts: list[AttemptLog] = field(default_factory=list)
    served: ModelRef | None = None
    ttfb: float | None = None
    usage: Any = None
    outcome: str = "error"
    finished: float = 0.0

    def attempts_header(self) -> str:
        return ",".join(a.label for a in self.attempts)

    def base_headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id}
        if self.attempts:
            headers["x-coderclaw-attempts"] = self.attempts_header()
        if self.served is not None:
            headers["x-coderclaw-model"] = str(self.served)
        return headers


@dataclass(slots=True)
class _Failed:
    """An attempt that produced no answer for the client (yet)."""

    status: int | None
    failure: Failure | None
    message: str
    code: str | None = None
    type_: str | None = None
    retry_after: float | None = None
    body: bytes = b""


class ChatProxy:
    def __init__(self, upstream: Upstream, cooldowns: Cooldowns, metrics: Metrics) -> None:
        self.upstream = upstream
        self.cooldowns = cooldowns
        self.metrics = metrics
        self.draining = False  # set at shutdown: streams cut then end with an SSE error
        self._finished: list[ChatContext] = []
        self._flush_at: asyncio.TimerHandle | None = None

    async def complete(self, ctx: ChatContext) -> web.StreamResponse:
        try:
            return await self._run_chain(ctx)
        except asyncio.CancelledError:
            if ctx.outcome == "error":  # not already told: the client left, or the drain ended
                ctx.outcome = "shutdown" if self.draining else "client_closed"
            raise
        finally:
            ctx.finished = time.monotonic()
            self._finished.append(ctx)
            if self._flush_at is None:
                loop = asyncio.get_running_loop()
                self._flush_at = loop.call_later(LOG_DELAY, self.flush_logs)

    def flush_logs(self) -> None:
        """Write the log lines and counters of the requests finished so far."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        finished, self._finished = self._finished, []
        with batched_writes():
            for ctx in finished:
                self._log(ctx)

    async def _run_chain(self, ctx: ChatContext) -> web.StreamResponse:
        settings = ctx.settings
        gw = settings.config.gateway
        loop = asyncio.get_running_loop()
        deadline = loop.time() + gw.timeouts.total_seconds
        last: _Failed | None = None
        plan = plan_chain(ctx.chain, self.cooldowns, time.monotonic())
        for ref in plan:
            tries = 0
            model_started = time.monotonic()
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return self._exhausted(ctx, last, budget_spent=True)
                tries += 1
                ctx.attempt_started = time.monotonic()
                result = await self._attempt(ctx, ref, remaining)
                elapsed = time.monotonic() - ctx.attempt_started
                if isinstance(result, web.StreamResponse):
                    self.cooldowns.succeed(ref)
                    return result
                ctx.attempts.append(AttemptLog(ref, result.status, result.failure, elapsed * 1e3))
                last = result
                verdict = classify(result.status, code=result.code, failure=result.failure)
                decision = decide(
                    verdict,
                    attempts_on_model=tries,
                    retries=gw.retries,
                    retry_after=result.retry_after,
                    max_retry_wait=gw.max_retry_wait_seconds,
                )
                if decision.action is Action.RETURN:
                    return self._error_response(ctx, result, result.status or 502)
                if decision.action is Action.STOP:
                    return self._account_error(ctx, result)
                if decision.action is Action.RETRY:
                    wait = min(decision.wait, deadline - loop.time())
                    if wait > 0:
                        await asyncio.sleep(wait)
                    continue
                self.cooldowns.fail(
                    ref, time.monotonic(), result.retry_after, started=model_started
                )
                break
        return self._exhausted(ctx, last, budget_spent=False)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(
        self, ctx: ChatContext, ref: ModelRef, remaining: float
    ) -> web.StreamResponse | _Failed:
        timeouts = ctx.settings.config.gateway.timeouts
        body = dict(ctx.body)
        body["model"] = ref.upstream_id
        payload = wire.dumps(body)
        first_deadline = asyncio.get_running_loop().time() + min(
            timeouts.first_token_seconds, remaining
        )
        try:
            # The first-token timeout covers the wait for the status line too: a model that
            # answers nothing at all is as silent as one that sends headers and no chunk.
            async with asyncio.timeout_at(first_deadline) as timer:
                resp = await self.upstream.post_chat(
                    ctx.settings, payload, stream=ctx.stream, client_headers=ctx.request.headers
                )
                async with resp:
                    if resp.status != 200:
                        raw = await _read_capped(resp.content, MAX_ERROR_BODY)
                        message, type_, code = wire.parse_upstream_error(resp.status, raw)
                        return _Failed(
                            resp.status,
                            None,
                            message,
                            code,
                            type_,
                            parse_retry_after(resp.headers.get("Retry-After")),
                            raw,
                        )
                    if ctx.stream:
                        timer.reschedule(None)  # the relay keeps its own deadlines
                        return await self._relay_stream(ctx, ref, resp, first_deadline, remaining)
                    total_deadline = asyncio.get_running_loop().time() + remaining
                    timer.reschedule(min(first_deadline + timeouts.idle_seconds, total_deadline))
                    raw = await resp.read()
                    return self._finish_plain(ctx, ref, resp, raw)
        except TimeoutError:
            return _Failed(None, Failure.TIMEOUT, "no answer before the first-token timeout")
        except (aiohttp.ClientError, ConnectionError) as exc:
            return _Failed(None, Failure.RESET, f"connection failed: {type(exc).__name__}")
        except asyncio.CancelledError:
            # The client went away: leaving the `async with` closed the upstream connection,
            # which is how the router learns to stop.
            if not self.draining:
                self.upstream.replace_closed_connection(ctx.settings)
            raise

    def _finish_plain(
        self, ctx: ChatContext, ref: ModelRef, resp: aiohttp.ClientResponse, raw: bytes
    ) -> web.StreamResponse | _Failed:
        try:
            data = wire.loads(raw)
        except ValueError:
            return _Failed(502, None, "the router sent a body that is not JSON")
        if not isinstance(data, dict):
            return _Failed(502, None, "the router sent a JSON body that is not an object")
        if "error" in data and "choices" not in data:
            message, type_, code = wire.parse_upstream_error(502, raw)
            return _Failed(502, None, message, code, type_)
        data["model"] = str(ref)
        ctx.served = ref
        ctx.usage = data.get("usage")
        ctx.outcome = "ok"
        now = time.monotonic()
        ctx.ttfb = now - ctx.started
        ctx.attempts.append(AttemptLog(ref, 200, None, (now - ctx.attempt_started) * 1e3))
        headers = ctx.base_headers()
        provider = resp.headers.get("x-inference-provider")
        if provider:
            headers["x-inference-provider"] = provider
        return web.Response(body=wire.dumps(data), headers=headers, content_type="application/json")

    async def _relay_stream(
        self,
        ctx: ChatContext,
        ref: ModelRef,
        resp: aiohttp.ClientResponse,
        first_deadline: float,
        remaining: float,
    ) -> web.StreamResponse | _Failed:
        """Relay SSE events; commit on the first chunk; end honestly whatever happens."""
        idle = ctx.settings.config.gateway.timeouts.idle_seconds
        loop = asyncio.get_running_loop()
        total_deadline = loop.time() + remaining
        parser = wire.SSEParser()
        ref_name = str(ref)
        out: web.StreamResponse | None = None
        finished = False
        batch: list[bytes] = []
        writing = False  # a timeout while writing means the client, not the upstream, stalled
        try:
            async with asyncio.timeout_at(first_deadline) as timer:
                upstream_ended = False
                while not upstream_ended:
                    chunk = await resp.content.readany()
                    # At the end of the body the parser may still hold a complete last event.
                    events = parser.feed(chunk) if chunk else parser.close()
                    upstream_ended = not chunk
                    for data in events:
                        if data.startswith(b"[DONE]"):
                            upstream_ended = True
                            break
                        event = self._rewrite_event(ctx, data, ref_name)
                        if isinstance(event, dict):  # an upstream error event
                            if out is None and not batch:
                                message, type_, code = wire.parse_upstream_error(502, data)
                                return _Failed(502, None, message, code, type_)
                            # Chunks came first (in this very read, maybe): the stream is
                            # committed to this model, and its failure is told honestly.
                            if out is None:
                                out = await self._commit(ctx, ref, resp)
                            await _write(out, b"".join(batch))
                            await self._send_error(out, event, ctx)
                            return out
                        if event is not None:
                            batch.append(event[0])
                            finished = finished or event[1]
                    if batch:
                        if out is None:
                            out = await self._commit(ctx, ref, resp)
                        writing = True
                        await _write(out, b"".join(batch))
                        writing = False
                        batch.clear()
                    if out is not None:  # until the first chunk, the first-token deadline holds
                        timer.reschedule(min(loop.time() + idle, total_deadline))
        except _ClientGone:
            ctx.outcome = "client_closed"
            assert out is not None
            # The rest of the upstream stream is not read: its connection is closed.
            self.upstream.replace_closed_connection(ctx.settings)
            return out
        except asyncio.CancelledError:
            if out is not None and self.draining:
                await self._send_error(
                    out, _stream_error("the gateway is shutting down; retry the request"), ctx
                )
            raise
        except TimeoutError:
            if out is None:
                return _Failed(None, Failure.TIMEOUT, "no chunk before the first-token timeout")
            if loop.time() >= total_deadline:
                message = (
                    "the request used up the gateway's time budget mid-stream "
                    "(gateway.timeouts.totalSeconds)"
                )
            elif writing:
                message = "the client did not read the stream for the idle timeout"
            else:
                message = "the upstream stream stalled past the idle timeout"
            await self._send_error(out, _stream_error(message), ctx)
            return out
        except (aiohttp.ClientError, ConnectionError) as exc:
            if out is None:
                return _Failed(None, Failure.RESET, f"connection failed: {type(exc).__name__}")
            await self._send_error(
                out, _stream_error("the upstream connection dropped mid-stream"), ctx
            )
            return out
        if out is None:
            return _Failed(502, None, "the upstream stream ended before the first chunk")
        if not finished:
            await self._send_error(
                out, _stream_error("the upstream stream ended without a finish_reason"), ctx
            )
            return out
        try:
            await _write(out, SSE_DONE)
            await out.write_eof()
        except _ClientGone:
            ctx.outcome = "client_closed"
            return out
        ctx.outcome = "ok"
        return out

    def _rewrite_event(
        self, ctx: ChatContext, data: bytes, ref_name: str
    ) -> tuple[bytes, bool] | dict[str, Any] | None:
        """The event to send and whether it carries a finish_reason; an error payload for an
        upstream error event; None for an event to drop (not JSON)."""
        try:
            obj = wire.loads(data)
        except ValueError:
            log.warning("upstream_event_not_json", request_id=ctx.request_id, size=len(data))
            return None
        if not isinstance(obj, dict):
            log.warning("upstream_event_not_object", request_id=ctx.request_id)
            return None
        if obj.get("error"):
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            return _stream_error(f"upstream error mid-stream: {message}")
        obj["model"] = ref_name
        finished = False
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    finished = True
        if obj.get("usage"):
            ctx.usage = obj["usage"]
        return b"data: " + wire.dumps(obj) + b"\n\n", finished

    async def _commit(
        self, ctx: ChatContext, ref: ModelRef, resp: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        ctx.served = ref
        ctx.attempts.append(
            AttemptLog(ref, 200, None, (time.monotonic() - ctx.attempt_started) * 1e3)
        )
        headers = ctx.base_headers()
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        provider = resp.headers.get("x-inference-provider")
        if provider:
            headers["x-inference-provider"] = provider
        out = web.StreamResponse(status=200, headers=headers)
        await out.prepare(ctx.request)
        ctx.ttfb = time.monotonic() - ctx.started
        return out

    async def _send_error(
        self, out: web.StreamResponse, payload: dict[str, Any], ctx: ChatContext
    ) -> None:
        ctx.outcome = "stream_failed"
        log.warning(
            "stream_failed",
            request_id=ctx.request_id,
            model=str(ctx.served),
            error=payload["error"]["message"],
        )
        try:
            # Bounded: a client that stopped reading must not hold this handler forever.
            async with asyncio.timeout(ERROR_WRITE_SECONDS):
                event = _redact(ctx, wire.dumps(payload))
                await _write(out, b"data: " + event + b"\n\n")
                await out.write_eof()
        except TimeoutError:
            ctx.outcome = "client_stalled"
            if ctx.request.transport is not None:
                ctx.request.transport.abort()
        except (_ClientGone, ConnectionError, RuntimeError):
            ctx.outcome = "client_closed"

    # -- answers when no model served --------------------------------------------------------

    def _json_error(
        self,
        ctx: ChatContext,
        status: int,
        payload: dict[str, Any],
        extra: Mapping[str, str] | None = None,
    ) -> web.Response:
        headers = ctx.base_headers()
        if extra:
            headers.update(extra)
        return web.Response(
            status=status,
            body=_redact(ctx, wire.dumps(payload)),
            headers=headers,
            content_type="application/json",
        )

    def _error_response(self, ctx: ChatContext, failed: _Failed, status: int) -> web.Response:
        ctx.outcome = f"client_error_{status}"
        type_ = failed.type_ or "invalid_request_error"
        payload = wire.error_payload(failed.message, type_, failed.code)
        if failed.body:
            try:
                data = wire.loads(failed.body)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                payload["error"] = {**payload["error"], **data["error"]}
        return self._json_error(ctx, status, payload)

    def _account_error(self, ctx: ChatContext, failed: _Failed) -> web.Response:
        status = failed.status or 401
        message, code = ACCOUNT_MESSAGES.get(status, ACCOUNT_MESSAGES[401])
        ctx.outcome = f"account_{status}"
        text = f"{message} (Hugging Face said: {failed.message})"
        return self._json_error(ctx, status, wire.error_payload(text, "authentication_error", code))

    def _exhausted(
        self, ctx: ChatContext, last: _Failed | None, *, budget_spent: bool
    ) -> web.Response:
        tried = ", ".join(a.label for a in ctx.attempts) or "none"
        detail = f"; last error: {last.message}" if last else ""
        status, code, lead = chain_failure(
            [a.status for a in ctx.attempts],
            [a.failure for a in ctx.attempts],
            budget_spent=budget_spent,
        )
        extra: dict[str, str] = {}
        if status == 429:
            now = time.monotonic()
            end = self.cooldowns.soonest_end(ctx.chain, now)
            extra["Retry-After"] = str(max(1, math.ceil((end or now + 1) - now)))
        ctx.outcome = f"failed_{status}"
        message = f"{lead} (attempts: {tried}){detail}"
        type_ = "rate_limit_error" if status == 429 else "upstream_error"
        return self._json_error(ctx, status, wire.error_payload(message, type_, code), extra)

    # -- logging -----------------------------------------------------------------------------

    def _log(self, ctx: ChatContext) -> None:
        """The request's one log line and all its counters, written after the answer."""
        total = ctx.finished - ctx.started
        served = str(ctx.served) if ctx.served else None
        metrics = self.metrics
        metrics.count_request(served or "none", ctx.outcome)
        for a in ctx.attempts:
            metrics.count_attempt(str(a.ref), a.failure.value if a.failure else str(a.status))
            metrics.upstream_latency.observe(a.ms / 1e3)
        if ctx.ttfb is not None:
            metrics.ttfb.observe(ctx.ttfb)
        if ctx.served is not None and ctx.served != ctx.chain[0]:
            metrics.fallbacks.inc()  # failed over, or skipped a cooling model
        usage = ctx.usage if isinstance(ctx.usage, dict) else {}
        log.info(
            "chat_completion",
            request_id=ctx.request_id,
            requested=ctx.body.get("model"),
            served=served,
            stream=ctx.stream,
            outcome=ctx.outcome,
            attempts=[
                {
                    "model": str(a.ref),
                    "status": a.failure.value if a.failure else a.status,
                    "ms": round(a.ms, 1),
                }
                for a in ctx.attempts
            ],
            ttfb_ms=round(ctx.ttfb * 1e3, 1) if ctx.ttfb is not None else None,
            total_ms=round(total * 1e3, 1),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


class _ClientGone(Exception):
    """The client closed its connection while we were writing to it."""


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to ``limit`` bytes; ``read(n)`` alone stops at the first piece that came,
    and an error body cut there loses the ``code`` that decides failover."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        piece = await content.read(limit - size)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


async def _write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionError as exc:  # aiohttp's ClientConnectionResetError is one
        raise _ClientGone from exc


def _redact(ctx: ChatContext, body: bytes) -> bytes:
    """An error body without the tokens: the router's own words are passed on, and a router
    (or a provider behind it) may quote the key it was sent."""
    return SecretRedactor(ctx.settings.secrets()).redact(body.decode()).encode()


def _stream_error(message: str) -> dict[str, Any]:
    return wire.error_payload(message, "upstream_error", "stream_interrupted")
