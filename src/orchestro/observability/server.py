"""The gateway's telemetry step: request metrics, the server span, the access log.

Outermost of the pipeline's steps, so it also sees the requests admission refuses. Per
request it costs a request context (a context variable), two clock reads and one histogram
record; the server span is built only while spans are recorded, and the access line only
when the ``orchestro.access`` logger is enabled for INFO.
"""

from __future__ import annotations

import asyncio
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
from . import context
from .context import RequestContext
from .instruments import SIZE_BUCKETS, HistogramSeries
from .telemetry import Telemetry

__all__ = ["CELL_ATTRIBUTE", "ServerTelemetry"]

CELL_ATTRIBUTE: Final = "orchestro.cell"
RequestContext.request_id_of = staticmethod(lambda request: request.get(REQUEST_ID_KEY))

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
        self._timer: asyncio.TimerHandle | None = None
        self._reported: list[int] | None = None
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

    def latency_p95(self) -> dict[str, float]:
        """The p95 duration of this cell's requests since the previous call (the upper bound
        of the bucket holding it), for the controller's load report."""
        family = self._duration
        family.fold()
        bounds = family.bounds
        totals = [0] * (len(bounds) + 1)
        for series in family.all_series():
            if series.attributes.get(CELL_ATTRIBUTE) == self._cell:
                for i, n in enumerate(series.counts):
                    totals[i] += n
        previous, self._reported = self._reported, totals
        delta = [
            now - before for now, before in zip(totals, previous or [0] * len(totals), strict=True)
        ]
        count = sum(delta)
        if not count:
            return {}
        seen = 0
        for i, n in enumerate(delta):
            seen += n
            if seen >= 0.95 * count:
                return {"p95": bounds[i] if i < len(bounds) else bounds[-1] * 2}
        return {}

    def start(self) -> None:
        """Fold the measurements buffered by the hot path every second (bounded memory
        between scrapes; see :class:`~.instruments.HistogramSeries`)."""
        loop = asyncio.get_running_loop()
        producer = self._telemetry.producer

        def tick() -> None:
            producer.fold()
            self._timer = loop.call_later(1.0, tick)

        self._timer = loop.call_later(1.0, tick)

    def close(self) -> None:
        """The cell stopped: its active-requests series leaves the metrics."""
        self._active.observers.pop(self._gate, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def hooks(self, route: Route) -> Hooks | None:
        op = route.operation
        if op is None:
            return None  # health, readiness, OpenAPI and metrics are not measured
        telemetry = self._telemetry
        tracer = telemetry.tracer
        cell, instance, template = self._cell, self._instance, route.path
        route_method = op.service.method
        # Series per status (per (method, status) for a method other than the route's, i.e.
        # HEAD on a GET route): one dictionary lookup a request.
        durations: dict[object, HistogramSeries] = {}
        response_sizes: dict[object, HistogramSeries] = {}
        request_sizes: dict[str, HistogramSeries] = {}
        has_body = route_method not in ("GET", "HEAD", "DELETE")
        duration_family = self._duration
        request_size_family = self._request_size
        response_size_family = self._response_size
        perf_counter = time.perf_counter
        set_current, get_current = context.set_current, context.get_current
        access_log = self._access_log
        is_logged = _access.isEnabledFor

        def attributes(method: str, status: int | None = None) -> dict[str, str | int]:
            found: dict[str, str | int] = {CELL_ATTRIBUTE: cell, _METHOD: method, _ROUTE: template}
            if status is not None:
                found[_STATUS] = status
            return found

        def before(request: web.BaseRequest) -> None:
            # The request context in its cheap form (made whole only if something asks for
            # it). aiohttp serves each request in a task of its own, with a copy of the
            # context: the variable needs no reset afterwards.
            if telemetry.recording:
                rc = RequestContext(cell, instance, request)
                set_current(rc)
                _start_span(rc, request, tracer, template)
                rc.start = perf_counter()
            else:
                set_current((cell, instance, request, perf_counter()))

        def after(request: web.BaseRequest, response: web.StreamResponse | None) -> None:
            now = perf_counter()
            rc = get_current()
            elapsed = now - (rc[3] if type(rc) is tuple else rc.start)
            method = request.method
            status = response.status if response is not None else 499
            key: object = status if method == route_method else (method, status)
            series = durations.get(key)
            if series is None:
                series = durations[key] = duration_family.series(attributes(method, status))
            series.append(elapsed)
            if has_body:
                length = request.content_length
                if length is not None:
                    size = request_sizes.get(method)
                    if size is None:
                        size = request_sizes[method] = request_size_family.series(
                            attributes(method)
                        )
                    size.append(length)
            body = getattr(response, "body", None)
            if type(body) is bytes:
                size = response_sizes.get(key)
                if size is None:
                    size = response_sizes[key] = response_size_family.series(
                        attributes(method, status)
                    )
                size.append(len(body))
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
            if type(rc) is RequestContext and rc.span is not None:
                _end_span(rc, status)

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
