"""The OpenAPI 3.1 description of the gateway's own endpoints, served at ``/openapi.json``.

Written by hand to say what the gateway promises, not what a framework infers: CI checks the
running gateway against it with schemathesis (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__, wire

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _error_response(description: str, schema: dict[str, Any] = _ERROR) -> dict[str, Any]:
    """An error answer with its ``x-request-id``: OpenAI's ``Error`` unless ``schema`` says."""
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": schema}},
    }


def _anthropic_error(description: str) -> dict[str, Any]:
    return _error_response(description, _ANTHROPIC_ERROR)


def _sse_event(description: str) -> dict[str, Any]:
    """The schema of one server-sent event of a stream (OpenAPI 3.1 describes each event)."""
    return {
        "description": description,
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "minLength": 1},
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


def _status_page(operation_id: str, summary: str) -> dict[str, Any]:
    """The status page's HTML: open to all (its data, ``/status.json``, needs the token)."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": {
                "200": {
                    "description": "The page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UNAUTHORIZED = _error_response(
    "Missing or wrong gateway token (only when gateway.auth.token or CODERCLAW_GATEWAY_TOKEN "
    "is set)"
)

_CHAT_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "The completion: a JSON object, or a server-sent event stream when "
        "`stream` is true. A stream that fails after its first chunk ends with an `error` event "
        "and no `[DONE]`.",
        "headers": {
            "x-request-id": {"$ref": "#/components/headers/RequestId"},
            "x-coderclaw-model": {
                "description": "The model ref that served the request",
                "schema": {"type": "string"},
            },
            "x-coderclaw-attempts": {
                "description": "Each attempt as `<ref>=<status or failure>`, comma separated",
                "schema": {"type": "string"},
            },
        },
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
            "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
        },
    },
    "400": _error_response("The body is not a valid chat completion request"),
    "401": _UNAUTHORIZED,
    "404": _error_response("The model named in `model` does not exist"),
    "408": _error_response("The client stopped sending its body (gateway.timeouts.idleSeconds)"),
    "413": _error_response("The body is larger than gateway.limits.maxBodyBytes"),
    "429": {
        **_error_response("Every model of the chain is rate limited"),
        "headers": {
            "x-request-id": {"$ref": "#/components/headers/RequestId"},
            "Retry-After": {
                "description": "Seconds until a model of the chain is usable again",
                "schema": {"type": "string"},
            },
        },
    },
    "502": _error_response("Every model of the chain failed"),
    "503": _error_response("Every model is unavailable, or no Hugging Face token is configured"),
    "504": _error_response("Every model timed out, or the request's time budget ran out"),
}

# ------------------------------------------------------------- the Responses API (§10.1)

_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "description": "The `id` of a response created with `store` not false",
    "schema": {"type": "string", "minLength": 1},
}
_RESPONSE_NOT_FOUND = _error_response(
    "No stored response has this id (never stored, deleted, or past "
    "gateway.responses.retentionHours)"
)
_STORE_UNAVAILABLE = _error_response("The gateway's database cannot be read right now")

_RESPONSES_PATHS: dict[str, Any] = {
    "/v1/responses": {
        "post": {
            "operationId": "createResponse",
            "summary": "A Response (OpenAI Responses API) through the configured chain, "
            "translated to one chat completion upstream",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ResponseRequest"}}
                },
            },
            "responses": {
                **_CHAT_RESPONSES,
                "200": {
                    "description": "The Response: a JSON object, or a server-sent event stream "
                    "when `stream` is true, ending with exactly one of `response.completed`, "
                    "`response.incomplete` or `response.failed`.",
                    "headers": {
                        **_CHAT_RESPONSES["200"]["headers"],
                        "x-coderclaw-dropped-tools": {
                            "description": "The hosted tools offered but not sent upstream "
                            "(the gateway cannot run them), comma separated",
                            "schema": {"type": "string"},
                        },
                    },
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                        "text/event-stream": {
                            "schema": {"$ref": "#/components/schemas/ResponseStreamEvent"}
                        },
                    },
                },
                "400": _error_response(
                    "The body is not a Responses request the gateway can translate; `param` "
                    "names the field"
                ),
                "404": _error_response(
                    "The model named in `model`, or the `previous_response_id`, does not exist"
                ),
                "503": _error_response(
                    "Every model is unavailable, no Hugging Face token is configured, or the "
                    "store cannot be read for `previous_response_id`"
                ),
            },
        }
    },
    "/v1/responses/{response_id}": {
        "get": {
            "operationId": "retrieveResponse",
            "summary": "A stored response",
            "parameters": [_RESPONSE_ID],
            "responses": {
                "200": _json_response("The Response", {"$ref": "#/components/schemas/Response"}),
                "401": _UNAUTHORIZED,
                "404": _RESPONSE_NOT_FOUND,
                "503": _STORE_UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": "deleteResponse",
            "summary": "Delete a stored response",
            "parameters": [_RESPONSE_ID],
            "responses": {
                "200": _json_response(
                    "Deleted",
                    {
                        "type": "object",
                        "required": ["id", "object", "deleted"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "response"},
                            "deleted": {"const": True},
                        },
                    },
                ),
                "401": _UNAUTHORIZED,
                "404": _RESPONSE_NOT_FOUND,
                "503": _STORE_UNAVAILABLE,
            },
        },
    },
    "/v1/responses/{response_id}/input_items": {
        "get": {
            "operationId": "listResponseInputItems",
            "summary": "The input items of a stored response, one page at a time",
            "parameters": [
                _RESPONSE_ID,
                {
                    "name": "after",
                    "in": "query",
                    "description": "List the items after this item id",
                    "schema": {"type": "string"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "description": "Items per page (default 20)",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                {
                    "name": "order",
                    "in": "query",
                    "description": "`desc` (newest first, the default) or `asc`",
                    "schema": {"enum": ["asc", "desc"]},
                },
            ],
            "responses": {
                "200": _json_response(
                    "One page of items",
                    {
                        "type": "object",
                        "required": ["object", "data", "first_id", "last_id", "has_more"],
                        "properties": {
                            "object": {"const": "list"},
                            "data": {"type": "array", "items": {"type": "object"}},
                            "first_id": _NULLABLE_STRING,
                            "last_id": _NULLABLE_STRING,
                            "has_more": {"type": "boolean"},
                        },
                    },
                ),
                "400": _error_response("`limit`, `order` or `after` is not valid"),
                "401": _UNAUTHORIZED,
                "404": _RESPONSE_NOT_FOUND,
                "503": _STORE_UNAVAILABLE,
            },
        }
    },
}

_RESPONSES_SCHEMAS: dict[str, Any] = {
    "ResponseRequest": {
        "type": "object",
        "required": ["input"],
        "additionalProperties": True,
        "properties": {
            "model": {
                "type": ["string", "null"],
                "description": "`coderclaw` (the chain), an alias or a model ref; absent "
                "means the chain",
            },
            "input": {"type": ["string", "array"], "items": {"type": "object"}},
            "instructions": _NULLABLE_STRING,
            "stream": {"type": ["boolean", "null"]},
            "store": {"type": ["boolean", "null"]},
            "previous_response_id": _NULLABLE_STRING,
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
            "model": {"type": "string", "description": "The ref that served it"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "ResponseStreamEvent": _sse_event(
        "One server-sent event: `event` is the Responses event type and `data` its JSON, with "
        "`type` and `sequence_number`"
    ),
}


# -- the Anthropic Messages API (errors in Anthropic's shape) ------------------------------

_ANTHROPIC_BODY_ERRORS: dict[str, Any] = {
    "400": _anthropic_error("`invalid_request_error`: the body is not a valid Messages request"),
    "401": _anthropic_error(
        "`authentication_error`: missing or wrong gateway token (sent as `x-api-key` or "
        "`Authorization: Bearer`), or Hugging Face rejected its token"
    ),
    "404": _anthropic_error("`not_found_error`: no model has this name"),
    "408": _anthropic_error("The client stopped sending its body (gateway.timeouts.idleSeconds)"),
    "413": _anthropic_error("`request_too_large`: the body is larger than maxBodyBytes"),
}

_MESSAGES_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "The message: a JSON object, or a server-sent event stream when "
        "`stream` is true (`message_start` … `message_stop`, `ping` during silence). A stream "
        "that fails after `message_start` ends with `event: error` and no `message_stop`.",
        "headers": _CHAT_RESPONSES["200"]["headers"],
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AnthropicMessage"}},
            "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
        },
    },
    **_ANTHROPIC_BODY_ERRORS,
    "402": _anthropic_error("`billing_error`: Hugging Face credits are exhausted"),
    "403": _anthropic_error("`permission_error`: the Hugging Face token may not call them"),
    "429": {
        **_anthropic_error("`rate_limit_error`: every model of the chain is rate limited"),
        "headers": _CHAT_RESPONSES["429"]["headers"],
    },
    "502": _anthropic_error("`api_error`: every model of the chain failed"),
    "503": _anthropic_error("`api_error`: no Hugging Face token is configured"),
    "504": _anthropic_error("`api_error`: every model timed out, or the time budget ran out"),
    "529": _anthropic_error("`overloaded_error`: every model of the chain answered 503"),
}

_MESSAGES_PATHS: dict[str, Any] = {
    "/v1/messages": {
        "post": {
            "operationId": "createMessage",
            "summary": "An Anthropic Messages request through the configured chain",
            "description": "`claude-…` names map through gateway.anthropic.modelMap; "
            "`?beta=true` is accepted. The gateway token may be sent as `x-api-key`.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/AnthropicMessagesRequest"}
                    }
                },
            },
            "responses": _MESSAGES_RESPONSES,
        }
    },
    "/v1/messages/count_tokens": {
        "post": {
            "operationId": "countMessageTokens",
            "summary": "The input tokens of a Messages request, estimated without the router",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/AnthropicCountTokensRequest"}
                    }
                },
            },
            "responses": {
                "200": _json_response(
                    "The estimate",
                    {
                        "type": "object",
                        "required": ["input_tokens"],
                        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
                    },
                ),
                **_ANTHROPIC_BODY_ERRORS,
            },
        }
    },
}

_ANTHROPIC_MESSAGE_PARAM = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": True,
    "properties": {
        "role": {"enum": ["user", "assistant"]},
        "content": {"type": ["string", "array"]},
    },
}

_ANTHROPIC_SCHEMAS: dict[str, Any] = {
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "AnthropicMessagesRequest": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {"type": "array", "items": _ANTHROPIC_MESSAGE_PARAM},
            "system": {"type": ["string", "array"]},
            "stream": {"type": "boolean"},
        },
    },
    "AnthropicCountTokensRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "messages": {"type": "array", "items": _ANTHROPIC_MESSAGE_PARAM},
            "system": {"type": ["string", "array"]},
        },
    },
    "AnthropicMessage": {
        "type": "object",
        "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": {"type": "string", "description": "The ref that served it"},
            "content": {"type": "array"},
            "stop_reason": {"type": ["string", "null"]},
            "stop_sequence": _NULLABLE_STRING,
            "usage": {"type": "object"},
        },
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "CoderClaw gateway",
        "version": __version__,
        "description": "A local OpenAI-compatible endpoint that proxies chat completions "
        "through a primary/fallback chain of Hugging Face models.",
    },
    "servers": [{"url": "/"}],
    "security": [{"gatewayToken": []}],
    "paths": {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "A chat completion through the configured chain",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                        }
                    },
                },
                "responses": _CHAT_RESPONSES,
            }
        },
        **_RESPONSES_PATHS,
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The chain name, the configured models, their aliases, the catalog",
                "description": "A request with an `anthropic-version` header (the Anthropic "
                "SDKs, Claude Code) gets Anthropic's list format instead: `data` of "
                "`{type: model, id, display_name, created_at}`, `has_more`, `first_id`, "
                "`last_id`, paged by `limit`, `after_id` and `before_id`.",
                "responses": {
                    "200": _json_response(
                        "The model list",
                        {
                            "type": "object",
                            "required": ["object", "data"],
                            "properties": {
                                "object": {"const": "list"},
                                "data": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Model"},
                                },
                            },
                        },
                    ),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model by id, alias or ref",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "description": "An id of the list; `/` may be sent as is or as `%2F`",
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": _json_response("The model", {"$ref": "#/components/schemas/Model"}),
                    "401": _UNAUTHORIZED,
                    "404": _error_response("No model has this id"),
                },
            }
        },
        **_MESSAGES_PATHS,
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: the process answers",
                "security": [],
                "responses": {
                    "200": _json_response(
                        "Alive",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: a token, a model catalog, not shutting down",
                "security": [],
                "responses": {
                    "200": _json_response("Ready", {"$ref": "#/components/schemas/Readiness"}),
                    "503": _json_response(
                        "Not ready; `reasons` says why", {"$ref": "#/components/schemas/Readiness"}
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        # The status page (issue 14): the HTML is open, its data needs the gateway token.
        "/": _status_page("statusPage", "The status page (HTML)"),
        "/status": _status_page("statusPageAlias", "The status page"),
        "/status.json": {
            "get": {
                "operationId": "status",
                "summary": "What the gateway is doing: chain states, catalog, recent requests, "
                "spend (SPEC §11)",
                "responses": {
                    "200": _json_response("The status", {"type": "object"}),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "security": [],
                "responses": {"200": _json_response("OpenAPI 3.1", {"type": "object"})},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "gatewayToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The gateway token, when one is configured (gateway.auth.token "
                "or CODERCLAW_GATEWAY_TOKEN); without one, /v1 needs no Authorization",
            }
        },
        "headers": {
            "RequestId": {
                "description": "The gateway's id of the request, also in its log",
                "schema": {"type": "string"},
            }
        },
        "schemas": {
            **_RESPONSES_SCHEMAS,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "param", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": _NULLABLE_STRING,
                            "code": _NULLABLE_STRING,
                        },
                    }
                },
            },
            "ChatCompletionRequest": {
                "type": "object",
                "required": ["messages"],
                "additionalProperties": True,
                "properties": {
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Message"},
                    },
                    "model": {
                        "type": "string",
                        "description": "`coderclaw` (the chain), an alias or a model ref; "
                        "absent means the chain",
                    },
                    "stream": {"type": ["boolean", "null"]},
                },
            },
            "Message": {
                "type": "object",
                "required": ["role"],
                "additionalProperties": True,
                "properties": {
                    "role": {"type": "string"},
                    "content": {"type": ["string", "array", "null"]},
                },
            },
            "ChatCompletion": {
                "type": "object",
                "required": ["id", "object", "model", "choices"],
                "additionalProperties": True,
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "chat.completion"},
                    "model": {"type": "string", "description": "The ref that served it"},
                    "choices": {"type": "array"},
                    "usage": {"type": ["object", "null"]},
                },
            },
            "StreamEvent": _sse_event(
                "One server-sent event (OpenAPI 3.1 describes each event of a stream): `data` is "
                "a chat.completion.chunk JSON, an `{error}` JSON that ends a failed stream, or "
                "`[DONE]` after the last chunk of a complete one"
            ),
            "Model": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "additionalProperties": True,
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                    "chain": {"type": "array", "items": {"type": "string"}},
                    "alias_for": {"type": "string"},
                    "aliases": {"type": "array", "items": {"type": "string"}},
                    "context_length": {"type": ["integer", "null"]},
                    "max_output_tokens": {"type": ["integer", "null"]},
                    "providers": {"type": "array", "items": {"type": "string"}},
                    "source": {"type": "string"},
                },
            },
            **_ANTHROPIC_SCHEMAS,
            "Readiness": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"enum": ["ready", "not ready"]},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                    "catalog": {"type": ["object", "null"]},
                },
            },
        },
    },
}

_GUARD_REFUSAL = _error_response(
    "The front door refused the request before any route saw it: a Host this gateway does not "
    "answer to (`host_not_allowed`, see gateway.allowedHosts) or a web page's Origin "
    "(`origin_not_allowed`, see gateway.allowedOrigins)"
)


def _with_guard_refusals(spec: dict[str, Any]) -> dict[str, Any]:
    """Every operation may be answered 403 by the Host/Origin guard: documented on each one
    that does not document a 403 of its own."""
    for path in spec["paths"].values():
        for operation in path.values():
            operation["responses"].setdefault("403", _GUARD_REFUSAL)
    return spec


_BODY = wire.dumps(_with_guard_refusals(SPEC))


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
