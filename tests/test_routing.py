"""The failover decisions of SPEC §6, as tables: classify, decide, chains (the
breaker that replaced the cooldowns is pinned in test_breaker.py)."""

from __future__ import annotations

import pytest

from gateway.refs import ModelRef, parse_ref
from gateway.routing import (
    Action,
    Decision,
    Failure,
    Verdict,
    backoff_seconds,
    chain_failure,
    classify,
    decide,
    parse_retry_after,
    request_chain,
)

A = parse_ref("huggingface/org/model-a")
B = parse_ref("huggingface/org/model-b")
C = parse_ref("huggingface/org/model-c:cheapest")


# -- classify: one row per line of SPEC §6's outcome table -----------------------------------

CLASSIFY_CASES = [
    # (status, code, failure, verdict)
    (200, None, None, Verdict.OK),
    # 429; 500/502/503/504/529; reset or refused before any byte → same model again
    (429, None, None, Verdict.RETRYABLE),
    (500, None, None, Verdict.RETRYABLE),
    (502, None, None, Verdict.RETRYABLE),
    (503, None, None, Verdict.RETRYABLE),
    (504, None, None, Verdict.RETRYABLE),
    (529, None, None, Verdict.RETRYABLE),
    (None, None, Failure.RESET, Verdict.RETRYABLE),
    # connect, first-token or idle timeout before the first chunk; 408 → next, never twice
    (None, None, Failure.TIMEOUT, Verdict.SILENT),
    (408, None, None, Verdict.SILENT),
    # 404, 410; 400 model_not_supported / model_not_found / context_length_exceeded → next
    (404, None, None, Verdict.MODEL_UNAVAILABLE),
    (404, "model_not_found", None, Verdict.MODEL_UNAVAILABLE),
    (410, None, None, Verdict.MODEL_UNAVAILABLE),
    (400, "model_not_supported", None, Verdict.MODEL_UNAVAILABLE),
    (400, "model_not_found", None, Verdict.MODEL_UNAVAILABLE),
    (400, "context_length_exceeded", None, Verdict.MODEL_UNAVAILABLE),
    # a 3xx (never followed) → next model at once: one request per redirect
    (301, None, None, Verdict.MODEL_UNAVAILABLE),
    (302, None, None, Verdict.MODEL_UNAVAILABLE),
    (307, None, None, Verdict.MODEL_UNAVAILABLE),
    (308, None, None, Verdict.MODEL_UNAVAILABLE),
    # any other 4xx → back to the client as is
    (400, None, None, Verdict.CLIENT_ERROR),
    (400, "content_policy_violation", None, Verdict.CLIENT_ERROR),
    (400, "invalid_request", None, Verdict.CLIENT_ERROR),
    (413, None, None, Verdict.CLIENT_ERROR),
    (422, None, None, Verdict.CLIENT_ERROR),
    (413, "context_length_exceeded", None, Verdict.CLIENT_ERROR),  # the code counts on 400 only
    # 401/402/403: the token is shared by every model → stop
    (401, None, None, Verdict.ACCOUNT),
    (402, None, None, Verdict.ACCOUNT),
    (403, None, None, Verdict.ACCOUNT),
]


@pytest.mark.parametrize(("status", "code", "failure", "verdict"), CLASSIFY_CASES)
def test_classify_follows_the_outcome_table(
    status: int | None, code: str | None, failure: Failure | None, verdict: Verdict
) -> None:
    assert classify(status, code=code, failure=failure) is verdict


def test_classify_a_timeout_wins_over_any_status() -> None:
    """A model that went silent is never asked twice, whatever else is known."""
    assert classify(503, failure=Failure.TIMEOUT) is Verdict.SILENT


# -- decide ----------------------------------------------------------------------------------


def _half() -> float:
    return 0.5


DECIDE_CASES = [
    # (verdict, attempts_on_model, retries, retry_after, max_wait, decision)
    (Verdict.OK, 1, 1, None, 10.0, Decision(Action.DONE)),
    (Verdict.CLIENT_ERROR, 1, 1, None, 10.0, Decision(Action.RETURN)),
    (Verdict.ACCOUNT, 1, 5, None, 10.0, Decision(Action.STOP)),
    (Verdict.SILENT, 1, 3, None, 10.0, Decision(Action.NEXT)),
    (Verdict.MODEL_UNAVAILABLE, 1, 3, 1.0, 10.0, Decision(Action.NEXT)),
    # retries: 1 + retries attempts on one model, then the next
    (Verdict.RETRYABLE, 1, 1, 2.0, 10.0, Decision(Action.RETRY, 2.0)),
    (Verdict.RETRYABLE, 2, 1, 2.0, 10.0, Decision(Action.NEXT)),
    (Verdict.RETRYABLE, 1, 0, None, 10.0, Decision(Action.NEXT)),
    (Verdict.RETRYABLE, 3, 3, None, 10.0, Decision(Action.RETRY, 0.5 * 4 * 0.875)),
    (Verdict.RETRYABLE, 4, 3, None, 10.0, Decision(Action.NEXT)),
    # Retry-After at or under maxRetryWait is waited; over it skips the retries
    (Verdict.RETRYABLE, 1, 1, 10.0, 10.0, Decision(Action.RETRY, 10.0)),
    (Verdict.RETRYABLE, 1, 1, 10.5, 10.0, Decision(Action.NEXT)),
    (Verdict.RETRYABLE, 1, 1, 60.0, 10.0, Decision(Action.NEXT)),
    (Verdict.RETRYABLE, 1, 1, 0.0, 10.0, Decision(Action.RETRY, 0.0)),
    (Verdict.RETRYABLE, 1, 1, 1.0, 0.0, Decision(Action.NEXT)),
    # no Retry-After: exponential backoff from 0.5 s (jitter 0.5 → factor 0.875)
    (Verdict.RETRYABLE, 1, 2, None, 10.0, Decision(Action.RETRY, 0.5 * 0.875)),
    (Verdict.RETRYABLE, 2, 2, None, 10.0, Decision(Action.RETRY, 1.0 * 0.875)),
]


@pytest.mark.parametrize(
    ("verdict", "attempts", "retries", "retry_after", "max_wait", "expected"), DECIDE_CASES
)
def test_decide_what_comes_after_an_attempt(
    verdict: Verdict,
    attempts: int,
    retries: int,
    retry_after: float | None,
    max_wait: float,
    expected: Decision,
) -> None:
    got = decide(
        verdict,
        attempts_on_model=attempts,
        retries=retries,
        retry_after=retry_after,
        max_retry_wait=max_wait,
        rand=_half,
    )
    assert got.action is expected.action
    assert got.wait == pytest.approx(expected.wait)


@pytest.mark.parametrize(
    ("retry_number", "low", "high"),
    [(1, 0.375, 0.5), (2, 0.75, 1.0), (3, 1.5, 2.0), (4, 3.0, 4.0)],
)
def test_backoff_doubles_from_half_a_second_with_jitter(
    retry_number: int, low: float, high: float
) -> None:
    assert backoff_seconds(retry_number, lambda: 0.0) == pytest.approx(low)
    assert backoff_seconds(retry_number, lambda: 1.0) == pytest.approx(high)


# -- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("2", 2.0),
        (" 60 ", 60.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-1", None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # HTTP dates are ignored
        ("86400", None),  # a day or more is not a retry hint
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


# -- chains ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "configured", "chain"),
    [
        (None, [A, B, C], [A, B, C]),  # coderclaw/default/empty: the configured chain
        (A, [A, B, C], [A, B, C]),  # the primary asked for: same chain
        (B, [A, B, C], [B, C]),  # a fallback asked for: it, then the other fallbacks
        (C, [A, B], [C, B]),  # another model: it first, then the fallbacks
        (C, [A], [C]),  # no fallbacks: only it
        (ModelRef("org/model-b", "groq"), [A, B], [ModelRef("org/model-b", "groq"), B]),
    ],
)
def test_request_chain(
    requested: ModelRef | None, configured: list[ModelRef], chain: list[ModelRef]
) -> None:
    assert request_chain(requested, configured) == chain


T, R = Failure.TIMEOUT, Failure.RESET


@pytest.mark.parametrize(
    ("statuses", "failures", "budget_spent", "expected"),
    [
        ([429], [None], False, 429),
        ([429, 429, 429], [None, None, None], False, 429),
        ([429, 429], [None, None], True, 429),
        ([429, 503], [None, None], False, 502),
        ([None, None], [T, T], False, 504),
        ([503, None], [None, T], True, 504),
        ([], [], True, 504),
        ([503, 503], [None, None], False, 503),
        ([503, None], [None, T], False, 502),
        ([500, 502], [None, None], False, 502),
        ([None], [R], False, 502),
        ([404, 410], [None, None], False, 502),
    ],
)
def test_chain_failure_status(
    statuses: list[int | None],
    failures: list[Failure | None],
    budget_spent: bool,
    expected: int,
) -> None:
    """All 429 → 429; budget spent or all timeouts → 504; all 503 → 503; anything else 502."""
    status, code, lead = chain_failure(statuses, failures, budget_spent=budget_spent)
    assert status == expected
    assert code and lead
