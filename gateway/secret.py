"""A value that never shows itself by accident: ``repr``/``str`` are masked."""

from __future__ import annotations

import hmac


def mask(value: str) -> str:
    """``hf_abcdefgh1234`` → ``hf_a…1234``; short values are fully hidden."""
    if len(value) < 12:
        return "…" * min(len(value), 3)
    return f"{value[:4]}…{value[-4:]}"


def clean_token(raw: str | None) -> str | None:
    """Strip white space and CR/LF as huggingface_hub does; empty means none."""
    if raw is None:
        return None
    value = raw.replace("\r", "").replace("\n", "").strip()
    return value or None


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison."""
        # A header value that is not UTF-8 arrives with surrogate escapes; it is just wrong.
        return hmac.compare_digest(self._value.encode(), candidate.encode(errors="surrogateescape"))

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(self._value)
