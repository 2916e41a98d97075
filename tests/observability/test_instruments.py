"""The hot-path instruments and their production as OpenTelemetry data."""

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

from orchestro.observability.instruments import Producer


def test_histogram_buckets_are_upper_inclusive_and_summarised() -> None:
    producer = Producer()
    family = producer.histogram("x.duration", "s", "d", bounds=(0.1, 1.0))
    series = family.series({"a": "1"})
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        series.record(value)
    (metric,) = producer.produce()
    assert isinstance(metric.data, Histogram)
    (point,) = metric.data.data_points
    assert point.bucket_counts == [2, 2, 1]  # <=0.1, <=1.0, +Inf
    assert point.count == 5
    assert point.sum == 4.65
    assert (point.min, point.max) == (0.05, 3.0)
    assert point.explicit_bounds == (0.1, 1.0)
    assert dict(point.attributes or {}) == {"a": "1"}


def test_series_are_shared_by_attributes_in_any_order() -> None:
    family = Producer().histogram("x", "s", "d")
    assert family.series({"a": 1, "b": 2}) is family.series({"b": 2, "a": 1})
    assert family.series({"a": 1}) is not family.series({"a": 2})


def test_families_are_registered_once_by_name() -> None:
    producer = Producer()
    assert producer.counter("c", "1", "d") is producer.counter("c", "1", "d")


def test_counters_and_gauges() -> None:
    producer = Producer()
    counter = producer.counter("c.total", "{x}", "d")
    counter.add(2, {"k": "v"})
    counter.series({"k": "v"}).add()
    gauge = producer.gauge("g", "1", "d")
    gauge.observers["one"] = lambda: [({"i": "a"}, 1.0), ({"i": "b"}, 0.0)]
    active = producer.gauge("active", "1", "d", as_sum=True)
    active.observers["gate"] = lambda: [({}, 3)]
    metrics = {m.name: m for m in producer.produce()}
    assert isinstance(metrics["c.total"].data, Sum)
    assert metrics["c.total"].data.is_monotonic
    assert [p.value for p in metrics["c.total"].data.data_points] == [3]
    assert isinstance(metrics["g"].data, Gauge)
    assert sorted(p.value for p in metrics["g"].data.data_points) == [0.0, 1.0]
    assert isinstance(metrics["active"].data, Sum)
    assert not metrics["active"].data.is_monotonic
    del gauge.observers["one"]
    assert "g" not in {m.name for m in producer.produce()}


def test_empty_families_produce_nothing() -> None:
    producer = Producer()
    producer.histogram("h", "s", "d").series({"a": 1})
    producer.counter("c", "1", "d")
    assert producer.produce() == []


def test_folds_from_two_threads_count_every_value_once() -> None:
    import sys
    import threading

    series = Producer().histogram("race", "s", "Raced folds.").series({"k": "v"})
    appended = 200_000
    stop = threading.Event()

    def fold_forever() -> None:  # the periodic exporter's thread, and a scrape's
        while not stop.is_set():
            series.fold()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    folders = [threading.Thread(target=fold_forever) for _ in range(2)]
    try:
        for thread in folders:
            thread.start()
        for i in range(appended):  # the event loop's thread, recording
            series.append(0.001 if i % 2 else 1.0)
            if i % 1000 == 0:
                series.fold()
    finally:
        stop.set()
        for thread in folders:
            thread.join()
        sys.setswitchinterval(previous)
    count, total, counts, _, _ = series.snapshot()
    assert count == appended == sum(counts)
    assert counts[0] == appended // 2  # a value counted twice or lost shows here
    assert total == pytest.approx(appended / 2 * 1.001)


def test_observed_counters_are_monotonic_sums() -> None:
    producer = Producer()
    dropped = producer.gauge("dropped", "{line}", "Dropped lines.", monotonic=True)
    dropped.observers["x"] = lambda: [({}, 7)]
    (metric,) = producer.produce()
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic
    assert metric.data.data_points[0].value == 7
