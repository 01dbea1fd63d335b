"""One upstream chat request through the chain: attempts, retries, failover, the time budget.

The decisions are ``routing``'s; the rendering is the sink's (``events``); the upstream I/O is
``gateway.upstream``'s. A dialect handler builds a ``ChatRequest`` and calls
``ChainEngine.run(request, sink)``; the engine returns the response to send.

``breaker`` (SPEC §9) is the one object consulted for planning (``Breaker.plan``) and told of
each model's outcome (``succeed`` / ``fail``); a half-open model is tried as a probe, one
request at a time.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import wire
from gateway.breaker import Breaker, Planned, ProbeTicket, failure_reason
from gateway.engine.events import ChainFailure, Clock, FailureKind, Sink, SystemClock
from gateway.engine.record import AttemptLog, RequestLog, RequestRecord
from gateway.engine.relay import Attempt, Failed, relay_stream
from gateway.errors import (
    UpstreamError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from gateway.metrics import Metrics
from gateway.observe import SecretRedactor
from gateway.refs import ModelRef
from gateway.routing import (
    Action,
    Failure,
    chain_failure,
    classify,
    decide,
    parse_retry_after,
)
from gateway.settings import Settings
from gateway.upstream import MAX_BODY_BYTES, Upstream, UpstreamReply

MAX_ERROR_BODY = 64 * 1024

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
class ChatRequest:
    """One upstream chat request as a dialect hands it to the engine."""

    client: web.Request  # the client's request: its headers, its connection
    request_id: str
    dialect: str  # "chat", "responses", "messages": on the log line and in the metrics
    settings: Settings
    body: dict[str, Any]  # the upstream chat completions body; ``model`` is set per attempt
    stream: bool
    chain: list[ModelRef]
    requested: Any = None  # the client's model name as sent, for the log line


class ChainEngine:
    """Drives requests through the chain; one per app."""

    def __init__(
        self,
        upstream: Upstream,
        breaker: Breaker,
        metrics: Metrics,
        clock: Clock | None = None,
    ) -> None:
        self.upstream = upstream
        self.breaker = breaker
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.log = RequestLog(metrics)
        self.draining = False  # set at shutdown: streams cut then end with an honest error

    async def run(self, request: ChatRequest, sink: Sink) -> web.StreamResponse:
        record = RequestRecord(
            request_id=request.request_id,
            dialect=request.dialect,
            requested=request.requested,
            stream=request.stream,
            chain=request.chain,
            started=self.clock.monotonic(),
        )
        try:
            return await self._run_chain(request, record, sink)
        except asyncio.CancelledError:
            if record.outcome == "error":  # not already told: the client left, or the drain
                record.outcome = "shutdown" if self.draining else "client_closed"
            raise
        finally:
            record.finished = self.clock.monotonic()
            self.log.add(record)

    def configure(self, settings: Settings) -> None:
        """Apply the settings in force (at start and on every reload)."""
        gw = settings.config.gateway
        self.breaker.configure(
            gw.breaker.base_seconds,
            gw.breaker.max_seconds,
            configured=settings.configured_refs,
            probe_timeout=gw.timeouts.total_seconds,
        )

    def flush_logs(self) -> None:
        self.log.flush()

    async def _run_chain(
        self, request: ChatRequest, record: RequestRecord, sink: Sink
    ) -> web.StreamResponse:
        gw = request.settings.config.gateway
        loop = asyncio.get_running_loop()
        deadline = loop.time() + gw.timeouts.total_seconds
        last: Failed | None = None
        clock = self.clock
        for planned in self.breaker.plan(request.chain, clock.monotonic()):
            ticket = self._probe_ticket(planned)
            if ticket is False:
                continue  # another request is probing it: skip, as an open one
            try:
                result = await self._try_model(request, record, sink, planned, deadline)
            finally:
                if isinstance(ticket, ProbeTicket):
                    self.breaker.release_probe(ticket)
            if isinstance(result, web.StreamResponse):
                return result
            if result is None:
                return self._exhausted(request, record, sink, last, budget_spent=True)
            last = result
        return self._exhausted(request, record, sink, last, budget_spent=False)

    def _probe_ticket(self, planned: Planned) -> ProbeTicket | bool:
        """True for a closed model, the ticket of a half-open one, False when it is taken."""
        if not planned.probe:
            return True
        ticket = self.breaker.acquire_probe(planned.ref, self.clock.monotonic())
        return ticket if ticket is not None else False

    async def _try_model(
        self,
        request: ChatRequest,
        record: RequestRecord,
        sink: Sink,
        planned: Planned,
        deadline: float,
    ) -> web.StreamResponse | Failed | None:
        """One model's attempts (retries within ``gateway.retries``; a probe tries once): the
        response when it served or the chain must stop, its last failure when the chain goes
        on, None when the time budget ran out."""
        gw = request.settings.config.gateway
        loop = asyncio.get_running_loop()
        clock = self.clock
        ref = planned.ref
        tries = 0
        model_started = clock.monotonic()
        outcomes: list[int | str] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            tries += 1
            attempt = Attempt(self, request, record, sink, ref, clock.monotonic())
            result = await self._attempt(attempt, remaining)
            if isinstance(result, web.StreamResponse):
                self.breaker.succeed(ref)
                return result
            elapsed = clock.monotonic() - attempt.started
            record.attempts.append(AttemptLog(ref, result.status, result.failure, elapsed * 1e3))
            outcomes.append(result.failure.value if result.failure else result.status or 502)
            verdict = classify(result.status, code=result.code, failure=result.failure)
            decision = decide(
                verdict,
                # A probe asks once: a still-dead model costs the user one quick failure.
                attempts_on_model=gw.retries + 1 if planned.probe else tries,
                retries=gw.retries,
                retry_after=result.retry_after,
                max_retry_wait=gw.max_retry_wait_seconds,
            )
            if decision.action is Action.RETURN:
                return self._client_error(request, record, sink, result)
            if decision.action is Action.STOP:
                return self._account_error(request, record, sink, result)
            if decision.action is Action.RETRY:
                wait = min(decision.wait, deadline - loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
                continue
            self.breaker.fail(
                ref,
                clock.monotonic(),
                result.retry_after,
                started=model_started,
                reason=failure_reason(outcomes, result.retry_after),
            )
            return result

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, attempt: Attempt, remaining: float) -> web.StreamResponse | Failed:
        request = attempt.request
        timeouts = request.settings.config.gateway.timeouts
        body = dict(request.body)
        body["model"] = attempt.ref.upstream_id
        payload = wire.dumps(body)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + min(timeouts.first_token_seconds, remaining)
        total_deadline = loop.time() + remaining
        silent = "no answer before the first-token timeout"
        try:
            # The first-token timeout covers the wait for the status line too: a model that
            # answers nothing at all is as silent as one that sends headers and no chunk.
            async with asyncio.timeout_at(first_deadline) as timer:
                reply = await self.upstream.post_chat(
                    request.settings,
                    payload,
                    stream=request.stream,
                    client_headers=request.client.headers,
                )
                async with reply:
                    if reply.status != 200:
                        return await _failed_answer(reply)
                    if request.stream:
                        timer.reschedule(None)  # the relay keeps its own deadlines
                        return await relay_stream(attempt, reply, first_deadline, total_deadline)
                    # Headers came: from now on the body may fall silent for idleSeconds at
                    # most between pieces (and never past the time budget).
                    def progress() -> None:
                        timer.reschedule(min(loop.time() + timeouts.idle_seconds, total_deadline))

                    progress()
                    silent = "the answer's body stalled past the idle timeout"
                    raw = await reply.read(MAX_BODY_BYTES, progress=progress)
                    return self._finish_plain(attempt, reply, raw)
        except TimeoutError:
            return Failed(None, Failure.TIMEOUT, silent)
        except UpstreamTimeout:
            return Failed(None, Failure.TIMEOUT, "the connection timed out")
        except UpstreamRedirect as exc:
            return Failed(exc.status, None, exc.message)
        except UpstreamTooLarge as exc:
            return Failed(502, None, exc.message)
        except UpstreamError as exc:  # unreachable, or the body broke off
            return Failed(None, Failure.RESET, exc.message)
        except asyncio.CancelledError:
            # The client went away: leaving the `async with` closed the upstream connection,
            # which is how the router learns to stop.
            if not self.draining:
                self.upstream.replace_closed_connection(request.settings)
            raise

    def _finish_plain(
        self, attempt: Attempt, reply: UpstreamReply, raw: bytes
    ) -> web.StreamResponse | Failed:
        try:
            data = wire.loads(raw)
        except ValueError:
            return Failed(502, None, "the router sent a body that is not JSON")
        if not isinstance(data, dict):
            return Failed(502, None, "the router sent a JSON body that is not an object")
        if "error" in data and "choices" not in data:
            message, type_, code = wire.parse_upstream_error(502, raw)
            return Failed(502, None, message, code, type_)
        record = attempt.record
        data["model"] = str(attempt.ref)
        record.usage = data.get("usage")
        record.finish_reason = _finish_reason(data)
        attempt.served(reply.provider)
        record.outcome = "ok"
        return attempt.sink.answer(attempt.ref, reply.provider, data, record.headers())

    # -- answers when no model served --------------------------------------------------------

    def _render(
        self, record: RequestRecord, sink: Sink, failure: ChainFailure
    ) -> web.StreamResponse:
        headers = record.headers()
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        return sink.error(failure, headers)

    def _client_error(
        self, request: ChatRequest, record: RequestRecord, sink: Sink, failed: Failed
    ) -> web.StreamResponse:
        status = failed.status or 502
        record.outcome = f"client_error_{status}"
        redact = _redactor(request)
        failure = ChainFailure(
            FailureKind.CLIENT_ERROR,
            status,
            redact(failed.message),
            failed.type_ or "invalid_request_error",
            _redact_opt(redact, failed.code),
            _redact_opt(redact, failed.param),
        )
        return self._render(record, sink, failure)

    def _account_error(
        self, request: ChatRequest, record: RequestRecord, sink: Sink, failed: Failed
    ) -> web.StreamResponse:
        status = failed.status or 401
        message, code = ACCOUNT_MESSAGES.get(status, ACCOUNT_MESSAGES[401])
        record.outcome = f"account_{status}"
        text = _redactor(request)(f"{message} (Hugging Face said: {failed.message})")
        failure = ChainFailure(FailureKind.ACCOUNT, status, text, "authentication_error", code)
        return self._render(record, sink, failure)

    def _exhausted(
        self,
        request: ChatRequest,
        record: RequestRecord,
        sink: Sink,
        last: Failed | None,
        *,
        budget_spent: bool,
    ) -> web.StreamResponse:
        tried = ", ".join(a.label for a in record.attempts) or "none"
        detail = f"; last error: {last.message}" if last else ""
        status, code, lead = chain_failure(
            [a.status for a in record.attempts],
            [a.failure for a in record.attempts],
            budget_spent=budget_spent,
        )
        retry_after = None
        if status == 429:
            now = self.clock.monotonic()
            end = self.breaker.soonest_end(request.chain, now)
            retry_after = max(1, math.ceil((end or now + 1) - now))
        record.outcome = f"failed_{status}"
        failure = ChainFailure(
            FailureKind.EXHAUSTED,
            status,
            _redactor(request)(f"{lead} (attempts: {tried}){detail}"),
            "rate_limit_error" if status == 429 else "upstream_error",
            code,
            retry_after=retry_after,
        )
        return self._render(record, sink, failure)


async def _failed_answer(reply: UpstreamReply) -> Failed:
    """A non-200 answer as a failed attempt, with the parts of its error body that decide."""
    raw = await reply.read_prefix(MAX_ERROR_BODY)
    message, type_, code = wire.parse_upstream_error(reply.status, raw)
    return Failed(
        reply.status,
        None,
        message,
        code,
        type_,
        parse_retry_after(reply.headers.get("Retry-After")),
        _error_param(raw),
    )


def _error_param(raw: bytes) -> str | None:
    """The ``param`` of an OpenAI error object body, when it is a string."""
    try:
        data = wire.loads(raw) if raw else None
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    return param if isinstance(param, str) else None


def _finish_reason(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            return str(choice["finish_reason"])
    return None


def _redactor(request: ChatRequest) -> Any:
    """Masks the tokens in a text: the router's own words are passed on, and a router (or a
    provider behind it) may quote the key it was sent."""
    return SecretRedactor(request.settings.secrets()).redact


def _redact_opt(redact: Any, value: str | None) -> str | None:
    return None if value is None else str(redact(value))
