"""Telemetry in tests: capture the spans a test makes, read the metrics a cell exposes.

```python
from orchestro.testing import CellClient, capture_spans, read_metrics

async def test_place_is_traced():
    with capture_spans() as spans:
        async with CellClient(Orders) as client:
            await client.post("/orders", json={"sku": "A1", "quantity": 2})
    (server,) = spans.named("POST /orders")
    assert server.attributes["http.response.status_code"] == 201
    assert read_metrics().value(
        "http_server_request_duration_seconds_count", http_route="/orders"
    ) == 1
```

While spans are captured they are recorded in full (the in-memory exporter counts as an
exporter); otherwise tracing stays in its cheap, non-recording form.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ..observability.telemetry import Telemetry, get_telemetry

__all__ = ["CapturedSpans", "Metrics", "capture_spans", "read_metrics"]


class CapturedSpans:
    """The spans finished while this is entered (a context manager)."""

    def __init__(self, telemetry: Telemetry | None = None) -> None:
        self._telemetry = telemetry
        self.exporter = InMemorySpanExporter()
        self._processor = SimpleSpanProcessor(self.exporter)

    def __enter__(self) -> CapturedSpans:
        (self._telemetry or get_telemetry()).add_span_processor(self._processor)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        (self._telemetry or get_telemetry()).remove_span_processor(self._processor)

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def __iter__(self) -> Iterator[ReadableSpan]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)

    def clear(self) -> None:
        self.exporter.clear()


def capture_spans(telemetry: Telemetry | None = None) -> CapturedSpans:
    """Record and keep every span finished inside the ``with`` block."""
    return CapturedSpans(telemetry)


class Metrics:
    """Samples of a Prometheus exposition, queried by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def find(self, name: str, **labels: str | int) -> list[tuple[dict[str, str], float]]:
        want = {k: str(v) for k, v in labels.items()}
        return [
            (found, value)
            for sample, found, value in self.samples
            if sample == name and all(found.get(k) == v for k, v in want.items())
        ]

    def value(self, name: str, **labels: str | int) -> float:
        """The sum of the samples named ``name`` having these labels (0 when none)."""
        return sum(value for _, value in self.find(name, **labels))

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def read_metrics(telemetry: Telemetry | None = None) -> Metrics:
    """Every metric of this process, as Prometheus would scrape it."""
    registry = (telemetry or get_telemetry()).registry
    return Metrics(generate_latest(registry).decode())
