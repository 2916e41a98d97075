"""RFC 9457 problem details: every error the gateway answers is ``application/problem+json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from ..errors import HTTPError

__all__ = ["PROBLEM_JSON", "PROBLEM_SCHEMA", "problem_response"]

PROBLEM_JSON: Final = "application/problem+json"

# The schema every problem body follows, published in OpenAPI as components/schemas/Problem.
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "An RFC 9457 problem details object.",
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem."},
        "title": {"type": "string", "description": "A short summary of the kind of problem."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request."},
        "instance": {"type": "string", "description": "The path of the request."},
        "request_id": {"type": "string", "description": "Quote it when reporting a problem."},
        "errors": {
            "type": "array",
            "description": "Each invalid input: where it is, what is wrong.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        },
    },
    "required": ["type", "title", "status"],
}


def problem_response(
    error: HTTPError,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The problem+json answer for ``error``."""
    body = error.to_problem()
    if instance is not None:
        body.setdefault("instance", instance)
    if request_id is not None:
        body.setdefault("request_id", request_id)
    all_headers = dict(headers or {})
    all_headers.update(error.headers)
    all_headers["Content-Type"] = PROBLEM_JSON
    return web.Response(
        status=error.status,
        body=json.dumps(body, ensure_ascii=False, default=str).encode(),
        headers=all_headers,
    )
