"""One route's telemetry: request metrics, the server span, the access line.

Run by the pipeline's frame around every step (so it also sees the requests admission
refuses). Per request it costs a request context (a context variable), two clock reads and
two buffered histogram values; the server span is built only while spans are recorded and
the request is sampled, and the access line only when the ``orchestro.access`` logger is
enabled for INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from aiohttp import hdrs, web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..observability import context
from ..observability.access import AccessLines, fields_text
from ..observability.buffer import Entry
from ..observability.context import CELL_ATTRIBUTE, TRACEPARENT, RequestContext, parse_traceparent
from ..observability.instruments import HistogramFamily, HistogramSeries
from ..observability.sampling import new_trace_id
from ..observability.telemetry import Telemetry
from .pipeline import Route
from .problem import REQUEST_ID_KEY

__all__ = ["MeterOwner", "RouteMeter", "access_logger"]

access_logger = logging.getLogger("orchestro.access")


class MeterOwner(Protocol):
    """What a route's meter reads of its gateway's telemetry
    (:class:`~.telemetry.ServerTelemetry`): its instruments, and the flags it keeps current."""

    _telemetry: Telemetry
    _cell: str
    _instance: str
    _duration: HistogramFamily
    _request_size: HistogramFamily
    _response_size: HistogramFamily
    telemetry_recording_seen: bool  # a span was started: ends must look for one
    extras: bool  # request sizes, spans or access lines: the end's slower path
    access_enabled: bool
    access_write: Callable[[Entry], None] | None


_METHOD = http_attributes.HTTP_REQUEST_METHOD
_ROUTE = http_attributes.HTTP_ROUTE
_STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE


class RouteMeter:
    """The telemetry of one route, run by the pipeline's frame itself.

    The frame reads the clock when a request arrives and sets the request context (the
    cheap tuple form, or with :meth:`begin` a whole context and a server span while spans
    are recorded); :meth:`end` records the duration and sizes, writes the access line and
    ends the span. No hook calls: each function call per request costs the gateway's
    throughput (see ``docs/architecture.md``).
    """

    __slots__ = (
        "_by_status",
        "_has_body",
        "_lines",
        "_method",
        "_owner",
        "_request_sizes",
        "_series",
        "_template",
        "cell",
        "instance",
        "telemetry",
    )

    def __init__(self, owner: MeterOwner, route: Route) -> None:
        op = route.operation
        self._owner = owner
        self.telemetry = owner._telemetry
        self.cell = owner._cell
        self.instance = owner._instance
        self._template = route.path if op is not None else ""  # "": no route matched
        self._method = op.service.method if op is not None else ""
        self._has_body = op is not None and self._method not in ("GET", "HEAD", "DELETE")
        # (duration, response size) appends per status of the route's method — one
        # dictionary lookup a request — and per (method, status) for another method (HEAD
        # on a GET route).
        self._by_status: dict[int, tuple[Append, Append]] = {}
        self._series: dict[object, tuple[Append, Append]] = {}
        self._request_sizes: dict[str, HistogramSeries] = {}
        self._lines: AccessLines | None = None  # made on the first access line

    def _attributes(self, method: str, status: int | None = None) -> dict[str, str | int]:
        found: dict[str, str | int] = {CELL_ATTRIBUTE: self.cell, _METHOD: method}
        if self._template:
            found[_ROUTE] = self._template
        if status is not None:
            found[_STATUS] = status
        return found

    def begin(self, request: web.BaseRequest, start: float) -> None:
        """Spans are recorded: if the request is sampled, a whole request context and the
        server span; if not, the request context as when nothing records (see
        :mod:`.sampling`)."""
        telemetry = self.telemetry
        parent = parse_traceparent(request.headers.get(TRACEPARENT))
        if parent is None:
            trace_id, flags = new_trace_id(), None
        else:
            trace_id, _, flags = parent
        if not telemetry.sampled(flags, trace_id):
            # The cheap form of the request context: the caller's flags, or those of the
            # trace started here, say "not sampled" to the cells it calls.
            if parent is not None:
                context.set_current((self.cell, self.instance, request, start))
            else:
                context.set_current((self.cell, self.instance, request, start, trace_id))
            return
        self._owner.telemetry_recording_seen = self._owner.extras = True
        rc = RequestContext(self.cell, self.instance, request)
        context.set_current(rc)
        if parent is None:
            telemetry.ids.hand(trace_id)  # the trace id the decision was taken on
        try:
            _start_span(rc, request, telemetry.tracer, self._template)
        finally:
            telemetry.ids.hand(0)
        rc.start = start

    def end(
        self, request: web.BaseRequest, response: web.StreamResponse | None, start: float
    ) -> None:
        """The request is answered (``response``), or was cancelled (None: status 499)."""
        elapsed = _clock() - start
        body: object = None
        if type(response) is web.Response:
            # aiohttp's own fields of a plain response: its `status` and `body` properties
            # are a Python call each.
            status = response._status
            body = response._body
        else:
            status = response.status if response is not None else 499
        method = request.method
        # The common case in one lookup: the route's own method, a status seen before.
        found = self._by_status.get(status) if method == self._method else None
        if found is None:
            found = self._series_for(method, status)
        found[0](elapsed)
        if type(body) is bytes:
            found[1](len(body))
        if self._has_body or self._owner.extras:
            self._rest(request, method, status, elapsed)

    def _rest(self, request: web.BaseRequest, method: str, status: int, elapsed: float) -> None:
        """What only some requests need: the request's size, the access line, the span."""
        if self._has_body:
            length = request.content_length
            if length is not None:
                size = self._request_sizes.get(method)
                if size is None:
                    size = self._request_sizes[method] = self._owner._request_size.series(
                        self._attributes(method)
                    )
                size.append(length)
        if self._owner.access_enabled:
            write = self._owner.access_write
            if write is not None:
                write(self._access_entry(request, method, status, elapsed))
            else:
                _log_access(request, method, status, elapsed, self._template)
        if self._owner.telemetry_recording_seen:
            rc = context.get_current()
            if type(rc) is RequestContext and rc.span is not None:
                _end_span(rc, status)

    def _access_entry(
        self, request: web.BaseRequest, method: str, status: int, elapsed: float
    ) -> tuple[Any, ...]:
        """What orchestro's JSON handler makes the access line of (an entry of
        :class:`~orchestro.observability.access.AccessLines`): the line :func:`_log_access`
        would give it. Its trace ids are those the request's other lines carry; a request
        whose context nothing made whole carries only the trace id someone else can see (its
        caller's, or the one its sampling decision drew), or none."""
        found = context.get_current()
        span_id: int | None = None
        if type(found) is RequestContext:
            request_id = found.request_id
            if found.span is not None:
                ids = found.span[0].get_span_context()
                trace_id, span_id = ids.trace_id, ids.span_id
            else:
                trace_id, span_id = found.trace_id, found.span_id
            fields = context.extra_fields()
        else:
            request_id = request[REQUEST_ID_KEY]  # the pipeline's, set before the meter ran
            if len(found) == 5:
                trace_id = found[4]
            else:
                header = request.headers.get(TRACEPARENT)
                parent = None if header is None else parse_traceparent(header)
                trace_id = None if parent is None else parent[0]
            fields = context.task_fields()  # what extra_fields gives for the cheap form
        lines = self._lines
        if lines is None:
            lines = self._lines = AccessLines(self.cell, self.instance, self._template)
        return (
            lines.make,
            time.time(),
            trace_id,
            span_id,
            request_id,
            method,
            request.raw_path,
            status,
            elapsed,
            request.headers.get(hdrs.USER_AGENT, "-"),
            # The connection's peername, which aiohttp keeps per connection: its `remote`
            # is worked out per request (~3k instructions); the writer thread works it out
            # from this, once per connection in a row (tests/observability/test_logs.py
            # pins the attribute: its fast line and logging line must agree).
            request._transport_peername,
            fields_text(fields) if fields else "",
        )

    def _series_for(self, method: str, status: int) -> tuple[Append, Append]:
        """The (duration, response size) appends of ``method`` and ``status``."""
        if method != self._method and method not in _KNOWN_METHODS:
            method = "_OTHER"  # as the semantic conventions say: a bounded set of values
        key: object = status if method == self._method else (method, status)
        found = self._series.get(key)
        if found is None:
            attributes = self._attributes(method, status)
            found = self._series[key] = (
                self._owner._duration.series(attributes).append,
                self._owner._response_size.series(attributes).append,
            )
            if method == self._method:
                self._by_status[status] = found
        return found


Append = Callable[[float], None]
_clock = time.perf_counter
_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def _log_access(
    request: web.BaseRequest, method: str, status: int, elapsed: float, template: str
) -> None:
    access_logger.info(
        '%s %s %d %.3fms "%s"',
        method,
        request.rel_url,
        status,
        elapsed * 1000,
        request.headers.get(hdrs.USER_AGENT, "-"),
        extra={
            "http.request.method": method,
            "url.path": request.path,
            "http.route": template,
            "http.response.status_code": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client.address": request.remote,
        },
    )


def _start_span(
    rc: RequestContext, request: web.BaseRequest, tracer: trace.Tracer, route: str
) -> None:
    parent = propagate.extract(request.headers)
    method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
    host, _, port = (request.host or "").partition(":")
    attributes: dict[str, str | int] = {
        _METHOD: method,
        url_attributes.URL_PATH: request.path,
        url_attributes.URL_SCHEME: request.scheme,
        server_attributes.SERVER_ADDRESS: host,
        CELL_ATTRIBUTE: rc.cell,
    }
    if route:
        attributes[_ROUTE] = route
    if method == "_OTHER":
        attributes[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] = request.method
    if port.isdigit():
        attributes[server_attributes.SERVER_PORT] = int(port)
    if rc.request_id:
        attributes["orchestro.request_id"] = rc.request_id
    span = tracer.start_span(
        f"{method} {route}" if route else method,  # no route matched: the method alone
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
    )
    rc.span = (span, otel_context.attach(trace.set_span_in_context(span, parent)))


def _end_span(rc: RequestContext, status: int) -> None:
    span, token = rc.span
    span.set_attribute(_STATUS, status)
    if status >= 500:
        # Server spans are errors on 5xx only (4xx is the client's mistake).
        span.set_attribute(error_attributes.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    otel_context.detach(token)
