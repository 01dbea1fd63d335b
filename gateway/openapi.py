"""The OpenAPI 3.1 description of the gateway's own endpoints, served at ``/openapi.json``.

Written by hand to say what the gateway promises, not what a framework infers: CI checks the
running gateway against it with schemathesis (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__, wire

_ERROR = {"$ref": "#/components/schemas/Error"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": _ERROR}},
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
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The chain name, the configured models, their aliases, the catalog",
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
        "/": {"get": {"operationId": "statusPage", "summary": "The status page (HTML)",
                      "security": [], "responses": {"200": {"description": "The page",
                      "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/status": {"get": {"operationId": "statusPageAlias", "summary": "The status page",
                            "security": [], "responses": {"200": {"description": "The page",
                            "content": {"text/html": {"schema": {"type": "string"}}}}}}},
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
            "StreamEvent": {
                "description": "One server-sent event (OpenAPI 3.1 describes each event of a "
                "stream): `data` is a chat.completion.chunk JSON, an `{error}` JSON that ends a "
                "failed stream, or `[DONE]` after the last chunk of a complete one",
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "minLength": 1},
                    "event": {"type": "string"},
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            },
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

_BODY = wire.dumps(SPEC)


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
