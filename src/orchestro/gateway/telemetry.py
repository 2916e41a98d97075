"""The gateway's telemetry: one :class:`ServerTelemetry` per gateway holds its instruments
and the flags its routes read; each route's :class:`~.route_meter.RouteMeter` measures,
traces and logs its requests (see :mod:`.route_meter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from opentelemetry.semconv.attributes import http_attributes, url_attributes

from ..observability.access import fast_access_writer
from ..observability.buffer import Entry
from ..observability.context import CELL_ATTRIBUTE, RequestContext
from ..observability.instruments import SIZE_BUCKETS
from ..observability.telemetry import Telemetry
from .admission import Gate
from .pipeline import Route
from .problem import REQUEST_ID_KEY, MalformedRequests
from .route_meter import RouteMeter, access_logger

__all__ = ["P95_WINDOW", "ServerTelemetry"]

P95_WINDOW: Final = 5.0  # seconds of requests the load report's p95 covers
_STATUS: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE

RequestContext.request_id_of = staticmethod(lambda request: request.get(REQUEST_ID_KEY))


class ServerTelemetry:
    """Measures each service request of one gateway (see :class:`RouteMeter`)."""

    def __init__(
        self,
        telemetry: Telemetry,
        cell: str,
        instance: str,
        gate: Gate,
        *,
        access_log: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._telemetry = telemetry
        self._gate = gate
        self._access_log = access_log
        # Whether access lines are written: read from the logger at start and every second
        # (not per request: Logger.isEnabledFor measured ~1 µs a call in the busy gateway),
        # so a level changed at run time applies within a second.
        self.access_enabled = False
        # Where access lines go when orchestro's own JSON handler is the only one: its
        # buffer, bypassing `logging` (see access.fast_access_writer); None: through logging.
        self.access_write: Callable[[Entry], None] | None = None
        self.telemetry_recording_seen = False  # a span was started: ends must look for one
        # Either of the two: the one flag a request's end reads.
        self.extras = False
        self._timer: asyncio.TimerHandle | None = None
        self._cell = cell
        self._instance = instance
        self._clock = clock
        # (when, cumulative duration bucket counts) each second: the p95's sliding window.
        self._history: deque[tuple[float, list[int]]] = deque()
        self._observed: list[object] = []  # observer keys to remove on close
        self._counted: list[tuple[Any, object]] = []  # (family, key) of observe_count
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
        self._malformed = producer.gauge(
            "orchestro.gateway.malformed_requests",
            "{request}",
            "Requests the HTTP parser refused (bad request line or header), by status.",
            monotonic=True,
        )
        labels = {CELL_ATTRIBUTE: cell, url_attributes.URL_SCHEME: "http"}
        active.observers[gate] = lambda: [(labels, gate.in_flight)]

    def latency_p95(self) -> dict[str, float]:
        """The p95 duration of this cell's requests over the last :data:`P95_WINDOW` seconds
        (the upper bound of the bucket holding it), for the controller's load report.

        A read changes nothing: the window slides with the one-second fold timer (which
        keeps the cumulative bucket counts of each second), so two readers at the same
        moment get the same answer."""
        totals = self._totals()
        history = self._history
        now = self._clock()
        base: list[int] | None = None
        for taken, counts in history:  # oldest first: the first inside the window
            if now - taken <= P95_WINDOW:
                base = counts
                break
        if base is None:
            base = history[-1][1] if history else [0] * len(totals)
        delta = [a - b for a, b in zip(totals, base, strict=True)]
        count = sum(delta)
        if not count:
            return {}
        bounds = self._duration.bounds
        seen = 0
        for i, n in enumerate(delta):
            seen += n
            if seen >= 0.95 * count:
                return {"p95": bounds[i] if i < len(bounds) else bounds[-1] * 2}
        return {}

    def _totals(self) -> list[int]:
        """This cell's cumulative duration bucket counts, all routes and statuses summed."""
        family = self._duration
        totals = [0] * (len(family.bounds) + 1)
        for series in family.all_series():
            if series.attributes.get(CELL_ATTRIBUTE) == self._cell:
                for i, n in enumerate(series.snapshot()[2]):
                    totals[i] += n
        return totals

    def _remember(self) -> None:
        """The fold timer's second: keep this second's totals, forget those out of the
        window (one more than the window, so a read always has a base inside it)."""
        now = self._clock()
        history = self._history
        history.append((now, self._totals()))
        while len(history) > 1 and now - history[1][0] > P95_WINDOW:
            history.popleft()

    def observe_malformed(
        self, malformed: MalformedRequests, attributes: Mapping[str, str] | None = None
    ) -> None:
        """Count ``malformed`` (requests the HTTP parser refused) in
        ``orchestro.gateway.malformed_requests`` while this gateway runs (``attributes``
        tell a cell's second gateway, its mesh listener's, apart)."""
        cell = self._cell
        extra = dict(attributes or {})

        def observe() -> list[tuple[dict[str, str | int], int]]:
            return [
                ({CELL_ATTRIBUTE: cell, _STATUS: status, **extra}, n)
                for status, n in list(malformed.counts.items())
            ]

        self._malformed.observers[malformed] = observe
        self._observed.append(malformed)

    def observe_count(
        self,
        name: str,
        description: str,
        observe: Callable[[], Iterable[tuple[dict[str, str | int], int]]],
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Export a count the gateway keeps (rate-limit and token refusals) as the counter
        ``name``, with this cell's attribute (and ``attributes``) on each series, while this
        gateway runs."""
        family = self._telemetry.producer.gauge(name, "{request}", description, monotonic=True)
        cell = self._cell
        extra = dict(attributes or {})

        def points() -> list[tuple[dict[str, str | int], int]]:
            return [({CELL_ATTRIBUTE: cell, **attrs, **extra}, n) for attrs, n in observe()]

        key = (name, observe)
        family.observers[key] = points
        self._counted.append((family, key))

    def start(self) -> None:
        """Fold the measurements buffered by the hot path every second (bounded memory
        between scrapes; see :class:`~.instruments.HistogramSeries`)."""
        loop = asyncio.get_running_loop()
        producer = self._telemetry.producer

        def tick() -> None:
            producer.fold()
            self._remember()
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
        for key in self._observed:
            self._malformed.observers.pop(key, None)
        for family, key in self._counted:
            family.observers.pop(key, None)
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
