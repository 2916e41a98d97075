"""The gateway's telemetry step: request metrics, the server span, the access log.

Outermost of the pipeline's steps, so it also sees the requests admission refuses. Per
request it costs a request context (a context variable), two clock reads and one histogram
record; the server span is built only while spans are recorded, and the access line only
when the ``orchestro.access`` logger is enabled for INFO.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..gateway.pipeline import REQUEST_ID_KEY, Hooks, Route
from ..gateway.steps import Gate
from .context import TRACEPARENT, TRACESTATE, RequestContext
from .instruments import SIZE_BUCKETS, HistogramSeries
from .telemetry import Telemetry

__all__ = ["CELL_ATTRIBUTE", "CONTEXT_KEY", "ServerTelemetry"]

CELL_ATTRIBUTE: Final = "orchestro.cell"
CONTEXT_KEY: Final = web.RequestKey("orchestro.telemetry", RequestContext)

_access = logging.getLogger("orchestro.access")

_METHOD = http_attributes.HTTP_REQUEST_METHOD
_ROUTE = http_attributes.HTTP_ROUTE
_STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE


class ServerTelemetry:
    """A pipeline step (see :mod:`orchestro.gateway.pipeline`) measuring each service request."""

    def __init__(
        self, telemetry: Telemetry, cell: str, instance: str, gate: Gate, *, access_log: bool = True
    ) -> None:
        self._telemetry = telemetry
        self._gate = gate
        self._access_log = access_log
        self._cell = cell
        self._instance = instance
        producer = telemetry.producer
        self._duration = producer.histogram(
            "http.server.request.duration", "s", "Duration of HTTP server requests."
        )
        self._request_size = producer.histogram(
            "http.server.request.body.size",
            "By",
            "Size of HTTP server request bodies.",
            SIZE_BUCKETS,
        )
        self._response_size = producer.histogram(
            "http.server.response.body.size",
            "By",
            "Size of HTTP server response bodies.",
            SIZE_BUCKETS,
        )
        # Active requests are the admission gate's count: read on collection, free per request.
        active = self._active = producer.gauge(
            "http.server.active_requests",
            "{request}",
            "Number of active HTTP server requests.",
            as_sum=True,
        )
        labels = {CELL_ATTRIBUTE: cell, url_attributes.URL_SCHEME: "http"}
        active.observers[gate] = lambda: [(labels, gate.in_flight)]

    def close(self) -> None:
        """The cell stopped: its active-requests series leaves the metrics."""
        self._active.observers.pop(self._gate, None)

    def hooks(self, route: Route) -> Hooks | None:
        if route.operation is None:
            return None  # health, readiness, OpenAPI and metrics are not measured
        telemetry = self._telemetry
        tracer = telemetry.tracer
        cell, instance, template = self._cell, self._instance, route.path
        durations: dict[tuple[str, int], HistogramSeries] = {}
        request_sizes: dict[str, HistogramSeries] = {}
        response_sizes: dict[tuple[str, int], HistogramSeries] = {}
        duration_family = self._duration
        request_size_family = self._request_size
        response_size_family = self._response_size
        perf_counter = time.perf_counter
        access_log = self._access_log
        is_logged = _access.isEnabledFor

        def before(request: web.BaseRequest) -> None:
            headers = request.headers
            rc = RequestContext(
                cell,
                instance,
                request.get(REQUEST_ID_KEY),
                headers.get(TRACEPARENT),
                headers.get(TRACESTATE),
            )
            rc.start = perf_counter()
            rc.enter()
            request[CONTEXT_KEY] = rc
            if telemetry.recording:
                _start_span(rc, request, tracer, template)

        def after(request: web.BaseRequest, response: web.StreamResponse | None) -> None:
            rc = request[CONTEXT_KEY]
            elapsed = perf_counter() - rc.start
            method = request.method
            status = response.status if response is not None else 499
            key = (method, status)
            series = durations.get(key)
            if series is None:
                series = durations[key] = duration_family.series(
                    {CELL_ATTRIBUTE: cell, _METHOD: method, _ROUTE: template, _STATUS: status}
                )
            series.record(elapsed)
            length = request.content_length
            if length is not None:
                size = request_sizes.get(method)
                if size is None:
                    size = request_sizes[method] = request_size_family.series(
                        {CELL_ATTRIBUTE: cell, _METHOD: method, _ROUTE: template}
                    )
                size.record(length)
            body = getattr(response, "body", None)
            if isinstance(body, bytes | bytearray):
                size = response_sizes.get(key)
                if size is None:
                    size = response_sizes[key] = response_size_family.series(
                        {CELL_ATTRIBUTE: cell, _METHOD: method, _ROUTE: template, _STATUS: status}
                    )
                size.record(len(body))
            if access_log and is_logged(logging.INFO):
                _access.info(
                    '%s %s %d %.1fms "%s"',
                    method,
                    request.rel_url,
                    status,
                    elapsed * 1000,
                    request.headers.get("User-Agent", "-"),
                    extra={
                        "http.request.method": method,
                        "url.path": request.path,
                        "http.route": template,
                        "http.response.status_code": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "client.address": request.remote,
                    },
                )
            if rc.span is not None:
                _end_span(rc, status)
            rc.exit()

        return Hooks(before, after)


def _start_span(
    rc: RequestContext, request: web.BaseRequest, tracer: trace.Tracer, route: str
) -> None:
    parent = propagate.extract(request.headers)
    method = request.method
    host, _, port = (request.host or "").partition(":")
    attributes: dict[str, str | int] = {
        _METHOD: method,
        _ROUTE: route,
        url_attributes.URL_PATH: request.path,
        url_attributes.URL_SCHEME: request.scheme,
        server_attributes.SERVER_ADDRESS: host,
        CELL_ATTRIBUTE: rc.cell,
    }
    if port.isdigit():
        attributes[server_attributes.SERVER_PORT] = int(port)
    if rc.request_id:
        attributes["orchestro.request_id"] = rc.request_id
    span = tracer.start_span(
        f"{method} {route}", context=parent, kind=SpanKind.SERVER, attributes=attributes
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
