"""The process's telemetry: one ``MeterProvider``, one ``TracerProvider``, one Prometheus
registry, set up once and shared by every cell, gateway and mesh client of the process.

Standard ``OTEL_*`` variables configure it:

- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` override the resource orchestro
  builds (``service.name`` = the cell, ``service.instance.id``, ``host.name``,
  ``service.version``);
- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none``; unset, spans go to OTLP when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, nowhere otherwise;
- ``OTEL_METRICS_EXPORTER``: ``otlp`` and/or ``console`` push metrics besides ``/metrics``
  (``prometheus`` and ``none`` add nothing: every cell always serves ``/metrics``);
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: one of the specification's six
  samplers, whose decision orchestro takes before any span is made (:mod:`.sampling`);
- ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_EXPORTER_OTLP_*``: read by the SDK
  itself.

Spans are *recorded* only when something exports them (:attr:`Telemetry.recording`).
Otherwise tracing still runs in its cheap form: the caller's ``traceparent`` is continued,
passed on by every mesh call and written on every log line, but no span objects are built
(see ``docs/architecture.md``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes import service_attributes
from prometheus_client import CollectorRegistry

from .._version import __version__
from ..errors import ConfigurationError
from .buffer import dropped_lines
from .instruments import Producer
from .process import instrument_process
from .sampling import RequestIds, Sampling

__all__ = ["SCOPE", "Telemetry", "configure", "get_telemetry"]

SCOPE = "orchestro"

_lock = threading.Lock()
_telemetry: Telemetry | None = None


class _Switchboard(SpanProcessor):
    """The provider's one span processor, forwarding to a list that can change at run time
    (the SDK's provider can add processors but never remove them; the test kit needs both)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.processors: list[SpanProcessor] = []
        self._on_change = on_change

    def add(self, processor: SpanProcessor) -> None:
        self.processors = [*self.processors, processor]
        self._on_change()

    def remove(self, processor: SpanProcessor) -> None:
        self.processors = [p for p in self.processors if p is not processor]
        self._on_change()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for p in self.processors:
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self.processors:
            p.on_end(span)

    def shutdown(self) -> None:
        for p in self.processors:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


def _with_producer(metrics_data: MetricsData | None, produce: Callable[[], list[Any]]) -> Any:
    """The SDK's collection with orchestro's own hot-path metrics added as one more scope."""
    ours = ScopeMetrics(InstrumentationScope(SCOPE, __version__), produce(), "")
    if metrics_data is None or not metrics_data.resource_metrics:
        resource = get_telemetry().resource
        return MetricsData([ResourceMetrics(resource, [ours], "")])
    first, *rest = metrics_data.resource_metrics
    merged = ResourceMetrics(first.resource, [*first.scope_metrics, ours], first.schema_url)
    return MetricsData([merged, *rest])


class _PrometheusReader(PrometheusMetricReader):
    """``opentelemetry-exporter-prometheus``'s reader on the process's own registry, with
    orchestro's hot-path metrics merged into each collection."""

    def __init__(self, registry: CollectorRegistry, producer: Producer) -> None:
        super().__init__(registry=registry)
        self._producer = producer

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(
            _with_producer(metrics_data, self._producer.produce), timeout_millis, **kwargs
        )


class _PushReader(PeriodicExportingMetricReader):
    """A periodic exporting reader (OTLP, console) that pushes orchestro's metrics too."""

    def __init__(self, exporter: MetricExporter, producer: Producer) -> None:
        super().__init__(exporter)
        self._producer = producer

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        super()._receive_metrics(
            _with_producer(metrics_data, self._producer.produce), timeout_millis, **kwargs
        )


class Telemetry:
    """The providers, exporters and hot-path metrics of this process."""

    def __init__(
        self,
        *,
        service_name: str = "orchestro",
        instance_id: str | None = None,
        version: str | None = None,
        span_exporters: Iterable[SpanExporter] | None = None,
        metric_readers: Iterable[MetricReader] = (),
        set_global: bool = True,
    ) -> None:
        attributes: dict[str, Any] = {
            service_attributes.SERVICE_NAME: service_name,
            "service.instance.id": instance_id or f"{socket.gethostname()}-{os.getpid()}",
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
        if version:
            attributes[service_attributes.SERVICE_VERSION] = version
        # The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins over our guesses.
        self.resource = Resource.create(attributes).merge(OTELResourceDetector().detect())
        self.service_name = str(self.resource.attributes.get(service_attributes.SERVICE_NAME))
        self.producer = Producer()
        dropped = self.producer.gauge(
            "orchestro.log.dropped",
            "{line}",
            "Log lines dropped because the log stream did not take them fast enough.",
            monotonic=True,
        )
        dropped.observers["logs"] = lambda: [({}, dropped_lines())]
        self.cells: list[str] = []  # served by this process, in start order
        self.registry = CollectorRegistry(auto_describe=False)
        readers: list[MetricReader] = [_PrometheusReader(self.registry, self.producer)]
        readers += [_PushReader(e, self.producer) for e in _metric_exporters()]
        readers += list(metric_readers)
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=readers)
        # Always some SDK metrics: a collection with none would drop orchestro's own.
        instrument_process(self.meter_provider.get_meter(SCOPE, __version__))
        self.recording = False
        self._switchboard = _Switchboard(self._update_recording)
        self.sampling = Sampling.from_environment()
        self.sampled = self.sampling.decider()
        self.ids = RequestIds()
        self.tracer_provider = TracerProvider(
            resource=self.resource, sampler=self.sampling.sampler(), id_generator=self.ids
        )
        self.tracer_provider.add_span_processor(self._switchboard)
        exporters = _span_exporters() if span_exporters is None else list(span_exporters)
        for exporter in exporters:
            self._switchboard.add(BatchSpanProcessor(exporter))
        self.tracer = self.tracer_provider.get_tracer(SCOPE, __version__)
        if set_global:
            _set_global_providers(self.meter_provider, self.tracer_provider)

    @property
    def primary_cell(self) -> str | None:
        """The first cell this process serves: its ``/metrics`` carries the process's own
        series."""
        return self.cells[0] if self.cells else None

    def _update_recording(self) -> None:
        self.recording = bool(self._switchboard.processors)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Send spans to ``processor`` too (spans are recorded while any processor is set)."""
        self._switchboard.add(processor)

    def remove_span_processor(self, processor: SpanProcessor) -> None:
        self._switchboard.remove(processor)

    def meter(self, name: str, version: str | None = None) -> metrics.Meter:
        return self.meter_provider.get_meter(name, version)

    def get_tracer(self, name: str, version: str | None = None) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name, version)

    def flush(self, timeout_millis: int = 5000) -> None:
        """Export what is pending (spans in batch processors, pushed metrics)."""
        self.tracer_provider.force_flush(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _set_global_providers(meters: MeterProvider, tracers: TracerProvider) -> None:
    """Make these the OpenTelemetry API's providers, so that ``metrics.get_meter`` and
    ``trace.get_tracer`` in user code (and proxies made before start-up) use them."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(meters)
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(tracers)


T = TypeVar("T")


def _names(variable: str) -> list[str]:
    return [v.strip().lower() for v in os.environ.get(variable, "").split(",") if v.strip()]


def _span_exporters() -> list[SpanExporter]:
    names = _names("OTEL_TRACES_EXPORTER")
    if not names and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    return _chosen(
        "OTEL_TRACES_EXPORTER",
        names,
        {"otlp": lambda: _otlp("trace")(), "console": ConsoleSpanExporter, "none": None},
    )


def _metric_exporters() -> list[MetricExporter]:
    # "prometheus": every cell serves /metrics anyway.
    return _chosen(
        "OTEL_METRICS_EXPORTER",
        _names("OTEL_METRICS_EXPORTER"),
        {
            "prometheus": None,
            "otlp": lambda: _otlp("metric")(),
            "console": ConsoleMetricExporter,
            "none": None,
        },
    )


def _chosen(
    variable: str, names: list[str], makers: Mapping[str, Callable[[], T] | None]
) -> list[T]:
    """The exporters ``names`` ask for (a maker of None: nothing to make)."""
    made: list[T] = []
    for name in names:
        if name not in makers:
            *others, last = makers
            raise ConfigurationError(
                f"{variable}={name!r} is not supported: use {', '.join(others)} or {last}"
            )
        make = makers[name]
        if make is not None:
            made.append(make())
    return made


def _otlp(signal: str) -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf"
        )
    try:
        if signal == "trace":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter
    except ImportError:
        raise ConfigurationError(
            "OTLP export needs the OTLP exporter: pip install 'orchestro[otlp]'"
        ) from None


def configure(**kwargs: Any) -> Telemetry:
    """Set up this process's telemetry (once; later calls return the first)."""
    global _telemetry
    with _lock:
        if _telemetry is None:
            _telemetry = Telemetry(**kwargs)
        return _telemetry


def get_telemetry() -> Telemetry:
    """This process's telemetry, set up with defaults on first use."""
    found = _telemetry
    return found if found is not None else configure()
