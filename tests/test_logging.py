"""Logging (SPEC §3): structlog set up once per process; secrets never reach a log line."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from gateway.engine.record import (
    LOG_DELAY,
    LOG_SLICE,
    ROUND_TURNS,
    RequestLog,
    RequestRecord,
    tenths,
)
from gateway.metrics import Metrics
from gateway.observe import REDACTOR, SecretRedactor, batched_writes, info_line, setup_logging
from gateway.refs import ModelRef
from gateway.secret import Secret, clean_token, mask

TOKEN = "hf_LoggedNeverSecret987654"
GW_TOKEN = "gateway-token-not-hf-shaped-31337"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """setup_logging configures structlog globally; put the defaults back after each test."""
    yield
    structlog.reset_defaults()
    REDACTOR.set(())


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_mask_known_secrets_everywhere() -> None:
    """Known secrets are masked in the event, in values, nested values and free text."""
    out = io.StringIO()
    setup_logging("info", "json", secrets=[TOKEN, GW_TOKEN], stream=out)
    log = structlog.get_logger("test")
    log.info(
        f"event with {GW_TOKEN}",
        token=TOKEN,
        header=f"Bearer {TOKEN}",
        nested={"list": [GW_TOKEN, 1, None], "tuple": (TOKEN,)},
        number=3,
    )
    text = out.getvalue()
    assert TOKEN not in text and GW_TOKEN not in text
    [line] = _lines(out)
    assert line["token"] == mask(TOKEN) == "hf_L…7654"
    assert line["header"] == f"Bearer {mask(TOKEN)}"
    assert line["nested"] == {"list": [mask(GW_TOKEN), 1, None], "tuple": [mask(TOKEN)]}
    assert line["number"] == 3
    assert line["level"] == "info"
    assert "timestamp" in line


def test_hf_shaped_tokens_are_masked_even_when_not_known() -> None:
    """Anything shaped like an HF token is masked, e.g. one a user pasted into a URL."""
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    structlog.get_logger("test").warning("bad_url", url=f"https://x/?t={TOKEN}")
    assert TOKEN not in out.getvalue()
    assert _lines(out)[0]["url"] == f"https://x/?t={mask(TOKEN)}"


def test_exception_text_is_masked() -> None:
    """A traceback whose message holds a secret is masked too."""
    out = io.StringIO()
    setup_logging("info", "json", secrets=[GW_TOKEN], stream=out)
    try:
        raise ValueError(f"refused {GW_TOKEN}")
    except ValueError:
        structlog.get_logger("test").exception("boom")
    assert GW_TOKEN not in out.getvalue()
    assert "ValueError: refused" in str(_lines(out)[0]["exception"])


def test_level_filters_and_a_new_setup_applies_to_loggers_already_used() -> None:
    """Levels below the configured one are dropped; a reload's new level reaches old loggers."""
    out = io.StringIO()
    setup_logging("warning", "json", stream=out)
    log = structlog.get_logger("reloaded")
    log.info("hidden")
    log.warning("shown")
    setup_logging("debug", "json", stream=out)
    log.debug("now_shown")
    assert [line["event"] for line in _lines(out)] == ["shown", "now_shown"]


def test_lines_logged_in_a_batch_reach_the_stream_in_one_write() -> None:
    """The gateway writes the lines of requests finished together with one write."""

    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    out = Recording()
    setup_logging("info", "json", secrets=[TOKEN], stream=out)
    log = structlog.get_logger("batch")
    with batched_writes():
        log.info("one", token=TOKEN)
        with batched_writes():  # nested: still the outer batch
            log.info("two")
        assert out.writes == []
    log.info("three")
    assert len(out.writes) == 2
    assert [line["event"] for line in _lines(out)] == ["one", "two", "three"]
    assert TOKEN not in out.getvalue()


def test_auto_format_is_json_when_not_a_terminal_and_console_on_request() -> None:
    """format auto → JSON lines off a TTY; console → a human line."""
    out = io.StringIO()
    setup_logging("info", "auto", stream=out)
    structlog.get_logger("t").info("started", port=18789)
    assert _lines(out)[0]["event"] == "started"
    out = io.StringIO()
    setup_logging("info", "console", secrets=[TOKEN], stream=out)
    structlog.get_logger("t").info("started", token=TOKEN)
    text = out.getvalue()
    assert "started" in text and mask(TOKEN) in text and TOKEN not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_redactor_set_replaces_the_known_secrets() -> None:
    """After a reload the old secret is no longer special and the new one is masked."""
    redactor = SecretRedactor(["old-secret-value-1234"])
    assert redactor.redact("x old-secret-value-1234") == "x old-…1234"
    redactor.set(["new-secret-value-5678", ""])
    assert redactor.redact("old-secret-value-1234 new-secret-value-5678") == (
        "old-secret-value-1234 new-…5678"
    )


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("hf_abcdefgh1234", "hf_a…1234"),
        ("123456789012", "1234…9012"),
        ("short", "………"),
        ("ab", "……"),
        ("", ""),
    ],
)
def test_mask(value: str, masked: str) -> None:
    """Long values keep 4 characters at each end; short ones are hidden completely."""
    assert mask(value) == masked


def test_secret_never_shows_itself() -> None:
    """repr/str/f-strings of a Secret are masked; reveal() is the only way to the value."""
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret)
    assert TOKEN not in str(secret)
    assert TOKEN not in f"{secret} {[secret]}"
    assert secret.reveal() == TOKEN
    assert secret.matches(TOKEN)
    assert not secret.matches(TOKEN + "x")
    assert secret == Secret(TOKEN)
    assert secret != Secret("other")
    assert len({secret, Secret(TOKEN)}) == 1


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (None, None),
        ("", None),
        (" \r\n\t", None),
        ("hf_x\n", "hf_x"),
        ("hf_x\r\n", "hf_x"),
        ("  hf_x  ", "hf_x"),
        ("hf_\r\nx", "hf_x"),
    ],
)
def test_clean_token(raw: str | None, clean: str | None) -> None:
    """CR/LF anywhere and white space around are removed; nothing left means no token."""
    assert clean_token(raw) == clean


async def test_request_lines_go_out_a_slice_per_loop_turn_after_the_delay() -> None:
    """20 finished requests: nothing before LOG_DELAY, then LOG_SLICE requests logged per turn
    of the loop (a request in flight meanwhile waits for one slice at each of its turns, not
    for all 20), their lines held until the last slice and written in one write; flush()
    writes whatever is left at once."""

    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    out = Recording()
    setup_logging("info", "json", stream=out)
    journal = RequestLog(Metrics())
    ref = ModelRef("org/model-a")

    def logged() -> int:
        return int(sum(journal.metrics.requests.counts.values()))

    for n in range(20):
        journal.add(RequestRecord(f"r{n}", "chat", "coderclaw", False, [ref], started=0.0))
    await asyncio.sleep(LOG_DELAY / 2)
    assert (out.writes, logged()) == ([], 0)
    async with asyncio.timeout(1.0):
        while logged() == 0:  # noqa: ASYNC110 (the log's own timer, no event to wait on)
            await asyncio.sleep(0.001)
    progress = [logged()]
    while progress[-1] < 20:
        assert out.writes == []  # held until the last slice
        await asyncio.sleep(0)
        progress.append(logged())
    steps = [b - a for a, b in itertools.pairwise(progress)]
    assert progress[0] < 20 and all(0 <= step <= LOG_SLICE for step in steps), progress
    assert len(out.writes) == 1
    assert [line["request_id"] for line in _lines(out)] == [f"r{n}" for n in range(20)]
    journal.add(RequestRecord("late", "chat", "coderclaw", False, [ref], started=0.0))
    journal.flush()
    assert _lines(out)[-1]["request_id"] == "late"


async def test_a_round_ends_within_its_turns_while_requests_keep_finishing() -> None:
    """Under load (320 finished at once, then 10 more at every turn of the loop) a round logs
    the 320 within ROUND_TURNS turns and writes them: the requests finishing meanwhile wait
    for the next round instead of holding the lines (and their records) without end."""
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    journal = RequestLog(Metrics())
    ref = ModelRef("org/model-a")

    def record(name: str) -> RequestRecord:
        return RequestRecord(name, "chat", "coderclaw", False, [ref], started=0.0)

    for n in range(320):
        journal.add(record(f"r{n}"))
    async with asyncio.timeout(1.0):
        while sum(journal.metrics.requests.counts.values()) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    for turn in range(ROUND_TURNS + 2):
        for n in range(10):
            journal.add(record(f"t{turn}-{n}"))
        await asyncio.sleep(0)
    written = [line["request_id"] for line in _lines(out)]
    assert written[:320] == [f"r{n}" for n in range(320)]
    assert not any(name.startswith("t") for name in written)  # the next round's
    journal.flush()
    assert len(_lines(out)) == 320 + 10 * (ROUND_TURNS + 2)


FIELDS = {"request_id": "r1", "served": f"huggingface/{TOKEN}", "attempts": [{"ms": 1.5}]}


@pytest.mark.parametrize(("level", "fmt"), [("info", "json"), ("info", "console")])
def test_info_line_is_the_line_the_logger_writes(level: str, fmt: str) -> None:
    """``info_line`` (the request log's line, without structlog's bound-logger steps) writes
    what ``log.info`` writes, masked secrets included, to the same stream."""
    out = io.StringIO()
    setup_logging(level, fmt, secrets=[TOKEN], stream=out)
    log = structlog.get_logger("test")
    log.info("chat_completion", **FIELDS)
    info_line(log, "chat_completion", dict(FIELDS))
    first, second = out.getvalue().splitlines()
    assert TOKEN not in out.getvalue()
    if fmt == "json":
        a, b = json.loads(first), json.loads(second)
        assert a.pop("timestamp") <= b.pop("timestamp")
        assert a == b
        assert list(a) == [*FIELDS, "event", "level"]
    else:  # the console line starts with its time
        assert first.split(" ", 1)[1] == second.split(" ", 1)[1]


def test_info_line_keeps_the_level_and_the_test_hooks() -> None:
    """Below the level nothing is written; capture_logs sees the line; after structlog is
    reset (its processors are not ours) the logger writes it."""
    out = io.StringIO()
    setup_logging("warning", "json", stream=out)
    log = structlog.get_logger("test")
    info_line(log, "chat_completion", dict(FIELDS))
    assert out.getvalue() == ""
    setup_logging("info", "json", stream=out)
    with capture_logs() as captured:
        info_line(log, "chat_completion", dict(FIELDS))
    assert captured == [{**FIELDS, "event": "chat_completion", "log_level": "info"}]
    assert out.getvalue() == ""
    structlog.reset_defaults()
    with capture_logs() as captured:
        info_line(structlog.get_logger("test"), "chat_completion", dict(FIELDS))
    assert [line["event"] for line in captured] == ["chat_completion"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 0.0),
        (0.04, 0.0),
        (0.05, 0.1),
        (1.24, 1.2),
        (1.25, 1.3),  # halves up (round() gives 1.2: half to even)
        (12.345678, 12.3),
        (999.95, 1000.0),
        (0.1 + 0.2, 0.3),  # the float's noise is gone
        (1_000_000.06, 1_000_000.1),
    ],
)
def test_tenths_table(value: float, expected: float) -> None:
    assert tenths(value) == expected
    assert repr(tenths(value)) == repr(expected)  # the log writes the short form
