"""The Anthropic Messages dialect (pure): requests to chat completions, chat output to Messages.

Nothing here does I/O. A Messages sink uses these pieces:

- ``chat_request`` turns a ``POST /v1/messages`` body into one upstream chat request;
- ``message_from_chat`` renders a complete chat completion as a Messages ``message``;
- ``MessagesStream`` renders upstream chat chunks as Messages SSE events;
- ``error_response`` / ``error_for_failure`` give Anthropic's error shape and status;
- ``estimate_tokens`` answers ``count_tokens``; ``models_page`` lists models Anthropic's way.

Decisions the Messages API leaves to a translator (each pinned by a test):

- ``thinking`` / ``redacted_thinking`` blocks on past assistant turns are dropped: their
  signatures mean nothing to other models, and some providers answer 400 to echoed reasoning.
- ``system``-role messages inside ``messages`` join the one leading system message, in order:
  many open-model chat templates refuse or ignore a system message that is not first.
- ``thinking`` in the request decides whether the upstream's reasoning is shown as ``thinking``
  blocks (without it, reasoning is left out, as Anthropic does). Its budget becomes
  ``ChatRequest.reasoning_effort`` but is not sent: providers refuse ``reasoning_effort`` for
  models that do not reason, and that 400 would fail the whole request.
- ``top_k`` is checked and not sent (not in the router's chat API); ``metadata.user_id`` is
  sent as ``user``.
- Anthropic's server tools (``web_search_*``, ``bash_*``, ``text_editor_*``, … any tool with a
  ``type`` and no ``input_schema``) are dropped and named in ``ChatRequest.dropped_tools``; a
  ``tool_choice`` forcing one is a 400.
- ``stop_sequence``: the chat API does not say which stop sequence matched. A choice's
  ``stop_reason`` string (vLLM reports the matched one) that is one of the request's
  ``stop_sequences`` gives ``stop_reason: "stop_sequence"``; anything else is ``end_turn``.
"""

from gateway.dialects.messages.errors import error_for_failure, error_response
from gateway.dialects.messages.models import display_name, models_page
from gateway.dialects.messages.render import (
    MessagesStream,
    message_from_chat,
    split_think,
    stop_reason,
    tool_input,
    tool_use_id,
    usage_of,
)
from gateway.dialects.messages.request import (
    DEFAULT_MODEL_MAP,
    ChatRequest,
    chat_request,
    map_model,
)
from gateway.dialects.messages.tokens import estimate_tokens, text_tokens
from gateway.errors import DialectError

__all__ = [
    "DEFAULT_MODEL_MAP",
    "ChatRequest",
    "DialectError",
    "MessagesStream",
    "chat_request",
    "display_name",
    "error_for_failure",
    "error_response",
    "estimate_tokens",
    "map_model",
    "message_from_chat",
    "models_page",
    "split_think",
    "stop_reason",
    "text_tokens",
    "tool_input",
    "tool_use_id",
    "usage_of",
]
