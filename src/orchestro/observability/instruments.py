"""Instruments for the hot paths: a few hundred nanoseconds per measurement.

The OpenTelemetry SDK's synchronous instruments cost 6-9 µs per measurement here (attribute
validation, hashing, locks, exemplar filters on every call), more than a whole
gateway-to-service round trip can spare. The gateway and the mesh therefore record into
these families instead: the attributes of a series are bound once, then a measurement is a
``bisect`` and three additions. At collection time (a Prometheus scrape, an OTLP export) a
:class:`Producer` turns the families into the SDK's own data points, which every reader of
the process's ``MeterProvider`` exports beside the metrics made with the OpenTelemetry API
(see :mod:`.readers`) — the role the OpenTelemetry specification gives a *MetricProducer*.

Series are created under the GIL by the event loop's thread and read by exporter threads
(a periodic OTLP reader, a ``/metrics`` scrape rendered off the loop): appends are lock-free
(``list.append`` is atomic), and a series' fold — and the snapshot a collection takes of it —
holds the series' lock, so two folds from two threads never count a value twice or lose one.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

__all__ = [
    "DURATION_BUCKETS",
    "SIZE_BUCKETS",
    "CounterFamily",
    "GaugeFamily",
    "HistogramFamily",
    "HistogramSeries",
    "Producer",
]

Attributes = Mapping[str, str | int | float | bool]

# Seconds, per the OpenTelemetry HTTP semantic conventions' advice for request durations
# (the SDK's default boundaries are sized for milliseconds).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# Bytes: powers of four from 64 B to 16 MiB.
SIZE_BUCKETS: tuple[float, ...] = tuple(float(64 * 4**i) for i in range(10))


class HistogramSeries:
    """One attribute set of a histogram.

    The hot path calls ``append(value)``: one C call adding the value to a buffer (a list:
    ``array('d').append`` parses its argument like a C extension of old, about ten times
    the instructions). Buffers are folded into the buckets in batches (:meth:`fold`: on
    every collection and every second while a gateway runs), which measured several times
    cheaper in a busy server than bucketing each value where it is recorded. ``record``
    buckets at once.
    """

    __slots__ = (
        "_bounds",
        "_lock",
        "append",
        "attributes",
        "count",
        "counts",
        "max",
        "min",
        "pending",
        "sum",
    )

    def __init__(self, attributes: Attributes, bounds: Sequence[float]) -> None:
        self.attributes = dict(attributes)
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.pending: list[float] = []
        self.append = self.pending.append
        self._lock = threading.Lock()

    def record(self, value: float) -> None:
        self.append(value)
        self.fold()

    def fold(self) -> None:
        """Move the buffered values into the buckets: safe against concurrent appends (a
        value appended meanwhile stays for the next fold) and against a fold from another
        thread (the series' lock: a value is counted once)."""
        if not self.pending:
            return
        with self._lock:
            self._fold()

    def snapshot(self) -> tuple[int, float, list[int], float, float]:
        """Fold, then ``(count, sum, bucket counts, min, max)`` as of one instant."""
        with self._lock:
            self._fold()
            return self.count, self.sum, list(self.counts), self.min, self.max

    def _fold(self) -> None:
        pending = self.pending
        n = len(pending)
        if not n:
            return
        values = pending[:n]
        del pending[:n]
        counts, bounds = self.counts, self._bounds
        # Buckets are upper-inclusive (value <= bound), as OpenTelemetry defines them. Most
        # values fall in the first bucket (a quick request, a small body): one comparison.
        first = bounds[0] if bounds else float("inf")
        in_first = 0
        for value in values:
            if value <= first:
                in_first += 1
            else:
                counts[bisect_left(bounds, value)] += 1
        counts[0] += in_first
        self.count += n
        self.sum += sum(values)
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high


class _Family:
    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.start = time.time_ns()


class HistogramFamily(_Family):
    """A histogram metric whose series are bound to their attributes once."""

    def __init__(
        self, name: str, unit: str, description: str, bounds: Sequence[float] = DURATION_BUCKETS
    ) -> None:
        super().__init__(name, unit, description)
        self.bounds = tuple(bounds)
        self._series: dict[tuple[Any, ...], HistogramSeries] = {}

    def series(self, attributes: Attributes) -> HistogramSeries:
        key = tuple(sorted(attributes.items()))
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = HistogramSeries(attributes, self.bounds)
        return found

    def fold(self) -> None:
        for series in list(self._series.values()):
            series.fold()

    def all_series(self) -> list[HistogramSeries]:
        return list(self._series.values())

    def metric(self, now: int) -> Metric | None:
        points = []
        for series in list(self._series.values()):
            count, total, counts, low, high = series.snapshot()
            if not count:
                continue
            points.append(
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=self.start,
                    time_unix_nano=now,
                    count=count,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=self.bounds,
                    min=low,
                    max=high,
                )
            )
        if not points:
            return None
        data = Histogram(points, AggregationTemporality.CUMULATIVE)
        return Metric(self.name, self.description, self.unit, data)


class CounterSeries:
    __slots__ = ("attributes", "value")

    def __init__(self, attributes: Attributes) -> None:
        self.attributes = dict(attributes)
        self.value = 0

    def add(self, amount: int = 1) -> None:
        self.value += amount


class CounterFamily(_Family):
    """A monotonic counter (``monotonic=False``: an up-down counter)."""

    def __init__(self, name: str, unit: str, description: str, *, monotonic: bool = True) -> None:
        super().__init__(name, unit, description)
        self.monotonic = monotonic
        self._series: dict[tuple[Any, ...], CounterSeries] = {}

    def series(self, attributes: Attributes) -> CounterSeries:
        key = tuple(sorted(attributes.items()))
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = CounterSeries(attributes)
        return found

    def add(self, amount: int, attributes: Attributes) -> None:
        """Add to the series of ``attributes`` (a dictionary lookup: for rare events)."""
        self.series(attributes).value += amount

    def metric(self, now: int) -> Metric | None:
        points = [
            NumberDataPoint(s.attributes, self.start, now, s.value)
            for s in list(self._series.values())
        ]
        if not points:
            return None
        data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=self.monotonic)
        return Metric(self.name, self.description, self.unit, data)


Observation = tuple[Attributes, float]


class GaugeFamily(_Family):
    """A gauge read at collection time from its observers (no cost between collections).

    Each observer returns ``(attributes, value)`` pairs; components add one while they run
    (``observers[key] = fn``) and remove it when they stop. ``as_sum`` exports an up-down
    sum (for quantities that add up across series, like active requests) instead of a gauge;
    ``monotonic`` a counter kept elsewhere (dropped log lines, malformed requests).
    """

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        *,
        as_sum: bool = False,
        monotonic: bool = False,
    ) -> None:
        super().__init__(name, unit, description)
        self.as_sum = as_sum or monotonic
        self.monotonic = monotonic
        self.observers: dict[object, Callable[[], Iterable[Observation]]] = {}

    def metric(self, now: int) -> Metric | None:
        points = [
            NumberDataPoint(dict(attrs), self.start, now, value)
            for observe in list(self.observers.values())
            for attrs, value in observe()
        ]
        if not points:
            return None
        data: Sum | Gauge
        if self.as_sum:
            data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=self.monotonic)
        else:
            data = Gauge(points)
        return Metric(self.name, self.description, self.unit, data)


Family = HistogramFamily | CounterFamily | GaugeFamily


class Producer:
    """The families of one process, produced as OpenTelemetry metrics on collection.

    A family is registered once by name; registering the same name again returns the first
    (so that every gateway and mesh client of a process shares its families).
    """

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float] = DURATION_BUCKETS
    ) -> HistogramFamily:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = HistogramFamily(name, unit, description, bounds)
        assert isinstance(found, HistogramFamily)
        return found

    def counter(
        self, name: str, unit: str, description: str, *, monotonic: bool = True
    ) -> CounterFamily:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = CounterFamily(
                name, unit, description, monotonic=monotonic
            )
        assert isinstance(found, CounterFamily)
        return found

    def gauge(
        self,
        name: str,
        unit: str,
        description: str,
        *,
        as_sum: bool = False,
        monotonic: bool = False,
    ) -> GaugeFamily:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = GaugeFamily(
                name, unit, description, as_sum=as_sum, monotonic=monotonic
            )
        assert isinstance(found, GaugeFamily)
        return found

    def fold(self) -> None:
        """Fold every histogram's buffered values into its buckets."""
        for family in list(self._families.values()):
            if isinstance(family, HistogramFamily):
                family.fold()

    def produce(self) -> list[Metric]:
        now = time.time_ns()
        metrics = []
        for family in list(self._families.values()):
            metric = family.metric(now)
            if metric is not None:
                metrics.append(metric)
        return metrics
