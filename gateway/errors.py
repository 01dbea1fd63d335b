"""The one exception tree of the gateway.

Every error a user can meet is a ``GatewayError``; its ``message`` says what went wrong and its
``hint`` what to do next. Secrets never enter either.

    GatewayError
    ├── ConfigError        bad config file, env file or flag; the process exits 78 (EX_CONFIG)
    │   └── RefError       a model reference that does not parse (404 model_not_found on a request)
    ├── TokenError         no Hugging Face token, or one the Hub rejected
    ├── UpstreamError      the router (or Hub) answered with an error or could not be reached
    │   ├── UpstreamUnreachable  no answer: refused, reset, DNS, TLS, closed before the status
    │   ├── UpstreamTimeout      the connection could not be opened in time
    │   ├── UpstreamRedirect     a 3xx, never followed (``location_host`` names its target)
    │   ├── UpstreamTooLarge     a body or one SSE event past its cap
    │   └── UpstreamBroken       the body broke off or cannot be decoded after the status line
    ├── DialectError       a request an API dialect cannot translate (400 invalid_request_error)
    └── ServiceError       systemd / launchd could not do what was asked
"""

from __future__ import annotations

EX_CONFIG = 78


class GatewayError(Exception):
    """Base of every error the gateway reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ConfigError(GatewayError):
    """The configuration cannot be used; nothing starts half-configured."""

    exit_code = EX_CONFIG

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file:
            where = f"{file}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if path:
            where += f"{path}: "
        super().__init__(f"{where}{message}", hint=hint)
        self.file = file
        self.path = path
        self.line = line
        self.reason = message


class RefError(ConfigError):
    """A model reference is not of the form ``huggingface/<org>/<model>[:<suffix>]``."""


class TokenError(GatewayError):
    """The Hugging Face token is missing or was rejected."""

    exit_code = 2


class UpstreamError(GatewayError):
    """The router failed; ``status`` is the HTTP status or None when no answer came."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class UpstreamUnreachable(UpstreamError):
    """No HTTP answer came: the connection was refused, reset or closed before the status line.

    ``reason`` is the kind of failure (the lower library's exception name), never a secret."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class UpstreamTimeout(UpstreamError):
    """The connection to the router or Hub could not be opened (or read) in time."""


class UpstreamRedirect(UpstreamError):
    """The router or Hub answered a 3xx; redirects are never followed (the token and the
    prompt would go to the ``Location``)."""

    def __init__(self, message: str, *, status: int, location_host: str) -> None:
        super().__init__(
            message,
            status=status,
            hint="point models.providers.huggingface.baseUrl/hubUrl at the final address",
        )
        self.location_host = location_host


class UpstreamTooLarge(UpstreamError):
    """A body or one SSE event is larger than its cap; nothing past the cap was kept."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class UpstreamBroken(UpstreamError):
    """The answer started but its body broke off (a reset, bad framing, bad compression)."""


class ServiceError(GatewayError):
    """The service manager (systemd or launchd) failed or is missing."""


class DialectError(GatewayError):
    """A request body a dialect cannot translate into a chat completion; answered with 400.

    ``param`` names the offending field (``input[2].content``, ``tool_choice``) the way the
    OpenAI error body's ``param`` does.
    """

    status = 400

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
