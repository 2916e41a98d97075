"""RFC 9457 problem details: every error the gateway answers is ``application/problem+json``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web
from opentelemetry import trace

from ..errors import HTTPError

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "MalformedRequests",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_KEY",
    "error_response",
    "problem_response",
]

# The request id the pipeline gives every request, and the header that carries it.
REQUEST_ID_KEY: Final = web.RequestKey("orchestro.request_id", str)
REQUEST_ID_HEADER: Final = "x-request-id"

_log = logging.getLogger("orchestro.gateway")

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


def error_response(request: web.BaseRequest, exc: Exception, cell: str) -> web.StreamResponse:
    """The problem+json answer for an error that escaped a route.

    ``HTTPError`` keeps its status; aiohttp's HTTP exceptions keep theirs (a redirect raised on
    purpose stays a redirect); anything else is a 500 whose body names the request id and
    whose traceback goes to the log, never to the body.
    """
    rid = request.get(REQUEST_ID_KEY)
    if isinstance(exc, HTTPError):
        return problem_response(exc, instance=request.path, request_id=rid)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers, body=exc.body)
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _ENTITY_HEADERS}
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else None
        return problem_response(
            HTTPError(exc.status, detail), instance=request.path, request_id=rid, headers=headers
        )
    # On the server span, when spans are recorded (a no-op otherwise).
    trace.get_current_span().record_exception(exc)
    _log.error(
        "cell %s: %s %s failed (request id %s)",
        cell,
        request.method,
        request.path,
        rid,
        exc_info=exc,
        extra={"cell": cell, "request_id": rid},
    )
    return problem_response(
        HTTPError(
            500,
            f"the service failed unexpectedly ({type(exc).__name__}); the cause is in the "
            f"cell's log under request id {rid}",
        ),
        instance=request.path,
        request_id=rid,
    )


_ENTITY_HEADERS: Final = frozenset({"content-type", "content-length"})


class MalformedRequests:
    """Requests aiohttp's parser refused (a bad request line or header, too long a header):
    they never reach the pipeline. Each is counted (``counts`` by status, read by the
    ``orchestro.gateway.malformed_requests`` metric) and logged as one WARNING line, at most
    ``burst`` a minute, the next line saying how many were left out: a client can send them
    at will, and each used to be an ERROR with a traceback."""

    def __init__(
        self,
        cell: str,
        *,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cell = cell
        self.counts: dict[int, int] = {}
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._window = -interval
        self._logged = 0
        self._suppressed = 0

    def seen(self, status: int, peer: str | None, reason: object) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        now = self._clock()
        if now - self._window >= self._interval:
            self._window, self._logged = now, 0
        if self._logged >= self._burst:
            self._suppressed += 1
            return
        self._logged += 1
        suppressed, self._suppressed = self._suppressed, 0
        text = " ".join(str(reason).split())  # one line, whatever the parser quoted
        if len(text) > 200:
            text = text[:200] + "..."
        _log.warning(
            "cell %s: refused a malformed request from %s with %d: %s%s",
            self.cell,
            peer or "?",
            status,
            text,
            f" ({suppressed} more since the last such line)" if suppressed else "",
            extra={"cell": self.cell, "http.response.status_code": status},
        )
