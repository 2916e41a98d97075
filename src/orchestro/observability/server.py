"""The gateway's telemetry: one :class:`ServerTelemetry` per gateway holds its instruments
and the flags its routes read; each route's :class:`~.route_meter.RouteMeter` measures,
traces and logs its requests (see :mod:`.route_meter`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from opentelemetry.semconv.attributes import url_attributes

from ..gateway.admission import Gate
from ..gateway.pipeline import Route
from ..gateway.problem import REQUEST_ID_KEY
from .context import RequestContext
from .instruments import SIZE_BUCKETS
from .logs import fast_access_writer
from .route_meter import CELL_ATTRIBUTE, RouteMeter, access_logger
from .telemetry import Telemetry

__all__ = ["ServerTelemetry"]

RequestContext.request_id_of = staticmethod(lambda request: request.get(REQUEST_ID_KEY))


class ServerTelemetry:
    """Measures each service request of one gateway (see :class:`RouteMeter`)."""

    def __init__(
        self, telemetry: Telemetry, cell: str, instance: str, gate: Gate, *, access_log: bool = True
    ) -> None:
        self._telemetry = telemetry
        self._gate = gate
        self._access_log = access_log
        # Whether access lines are written: read from the logger at start and every second
        # (not per request: Logger.isEnabledFor measured ~1 µs a call in the busy gateway),
        # so a level changed at run time applies within a second.
        self.access_enabled = False
        # Where access lines go when orchestro's own JSON handler is the only one: its
        # buffer, bypassing `logging` (see logs.fast_access_writer); None: through logging.
        self.access_write: Callable[[str], None] | None = None
        self.telemetry_recording_seen = False  # a span was started: ends must look for one
        # Either of the two: the one flag a request's end reads.
        self.extras = False
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
            self._read_access_level()
            self._timer = loop.call_later(1.0, tick)

        self._read_access_level()
        self._timer = loop.call_later(1.0, tick)

    def _read_access_level(self) -> None:
        self.access_enabled = self._access_log and access_logger.isEnabledFor(logging.INFO)
        self.access_write = fast_access_writer() if self.access_enabled else None
        self.extras = self.access_enabled or self.telemetry_recording_seen

    def close(self) -> None:
        """The cell stopped: its active-requests series leaves the metrics."""
        self._active.observers.pop(self._gate, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def meter(self, route: Route, *, unmatched: bool = False) -> RouteMeter | None:
        """What measures ``route``'s requests, or None for the gateway's own routes (health,
        readiness, OpenAPI and metrics are not measured). ``unmatched`` measures the answers
        to requests no route matched (404, 405), without ``http.route``."""
        if route.operation is None and not unmatched:
            return None
        return RouteMeter(self, route)
