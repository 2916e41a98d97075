"""The mesh client's telemetry: a duration per attempt, resilience counters, client spans.

Per attempt it costs one histogram record and, when spans are not recorded, a
``traceparent`` string (the request's trace, a fresh span id). While spans are recorded, a
call is an INTERNAL span (``call orders.get``) and each attempt a CLIENT span under it, whose
context travels in the attempt's headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..observability.context import (
    CELL_ATTRIBUTE,
    TRACEPARENT,
    TRACESTATE,
    RequestContext,
    current_cell,
    current_request,
)
from ..observability.context import get_current as _get_current
from ..observability.instruments import HistogramSeries, Observation
from ..observability.telemetry import Telemetry
from ..registry.base import Instance
from ..registry.view import RegistryView

__all__ = ["BREAKER_STATES", "MeshTelemetry", "no_counts", "registry_counts"]

_METHOD = http_attributes.HTTP_REQUEST_METHOD
_STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE
_TARGET = server_attributes.SERVER_ADDRESS
_ERROR = error_attributes.ERROR_TYPE
INSTANCE_ATTRIBUTE = "orchestro.instance"

# orchestro.mesh.breaker.state values.
BREAKER_STATES = {"closed": 0, "open": 1, "half-open": 2}


class MeshTelemetry:
    """What one :class:`~orchestro.mesh.Mesh` records (see the module's docstring)."""

    def __init__(self, telemetry: Telemetry, caller: str | None) -> None:
        self.telemetry = telemetry
        self._caller = caller
        self._tracer = telemetry.tracer
        producer = telemetry.producer
        self._duration = producer.histogram(
            "http.client.request.duration",
            "s",
            "Duration of mesh calls' attempts (HTTP or in process), per target cell.",
        )
        self._series: dict[tuple[str, str, Any, str | None], HistogramSeries] = {}
        self.retries = producer.counter(
            "orchestro.mesh.retries", "{retry}", "Attempts after the first, per target cell."
        )
        self.budget_refusals = producer.counter(
            "orchestro.mesh.retry_budget.refusals",
            "{retry}",
            "Retries (and hedges) not made because the target's retry budget was spent.",
        )
        self.hedges = producer.counter(
            "orchestro.mesh.hedges", "{request}", "Backup requests sent after a slow attempt."
        )
        self.ejections = producer.counter(
            "orchestro.mesh.ejections",
            "{ejection}",
            "Ejections of the target's instances by outlier detection (a circuit opened); "
            "orchestro.mesh.breaker.state tells which.",
        )
        self._breaker = producer.gauge(
            "orchestro.mesh.breaker.state",
            "1",
            "Circuit state per instance: 0 closed, 1 open (ejected), 2 half-open.",
        )
        self._instances = producer.gauge(
            "orchestro.registry.instances",
            "{instance}",
            "Instances of each cell in the registry, by state.",
        )

    @property
    def recording(self) -> bool:
        return self.telemetry.recording

    def observe(
        self,
        key: object,
        breakers: Callable[[], Iterable[tuple[str, str, str]]],
        registry: Callable[[], Iterable[Observation]],
    ) -> None:
        """Read circuit states (``(cell, instance, state)``) and registry counts on collection."""

        def states() -> Iterable[Observation]:
            for cell, instance, state in breakers():
                yield {_TARGET: cell, INSTANCE_ATTRIBUTE: instance}, BREAKER_STATES[state]

        self._breaker.observers[key] = states
        self._instances.observers[key] = registry

    def forget(self, key: object) -> None:
        self._breaker.observers.pop(key, None)
        self._instances.observers.pop(key, None)

    def caller(self) -> str | None:
        return current_cell() or self._caller

    def record(self, cell: str, method: str, outcome: Any, seconds: float) -> None:
        """One attempt: ``outcome`` is the status code, or the error's type name."""
        # The calling cell, inline (this runs on every call, the in-process ones included).
        found = _get_current()
        if found is None:
            caller = self._caller
        elif type(found) is tuple:
            caller = found[0]
        else:
            caller = found.cell
        key = (cell, method, outcome, caller)
        series = self._series.get(key)
        if series is None:
            attributes: dict[str, Any] = {_TARGET: cell, _METHOD: method}
            attributes[_STATUS if isinstance(outcome, int) else _ERROR] = outcome
            if caller is not None:
                attributes[CELL_ATTRIBUTE] = caller
            series = self._series[key] = self._duration.series(attributes)
        series.append(seconds)
        if len(series.pending) >= 4096:
            # A process that only calls (no gateway folding every second, no scrape yet)
            # must not buffer without bound.
            series.fold()

    def new_target(self, cell: str, detector: Any) -> None:
        """Start counting for ``cell``: its counters exist (at zero) from the first call, and
        its ejections are counted as they happen."""
        for counter in (self.retries, self.budget_refusals, self.hedges, self.ejections):
            self.count(counter, cell, amount=0)

        def ejected(instance: str) -> None:
            self.count(self.ejections, cell)

        detector.on_eject = ejected

    def count(
        self, counter: Any, cell: str, amount: int = 1, more: dict[str, str] | None = None
    ) -> None:
        attributes = {_TARGET: cell, **(more or {})}
        caller = self.caller()
        if caller is not None:
            attributes[CELL_ATTRIBUTE] = caller
        counter.add(amount, attributes)

    # Spans -----------------------------------------------------------------------------

    def records(self) -> bool:
        """Whether a call made now gets spans: spans are recorded in this process, and the
        request being served, if any, was sampled (a request its sampling dropped has a
        request context without a server span; its calls pass on its trace, unsampled)."""
        if not self.telemetry.recording:
            return False
        found = _get_current()
        return found is None or (type(found) is RequestContext and found.span is not None)

    def start_call(self, cell: str, operation: str) -> tuple[Any, Any]:
        span = self._tracer.start_span(
            f"call {cell}.{operation}" if operation else f"call {cell}",
            kind=SpanKind.INTERNAL,
            attributes={_TARGET: cell, "orchestro.operation": operation},
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    def end_call(self, started: tuple[Any, Any], error: BaseException | None) -> None:
        span, token = started
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
        otel_context.detach(token)

    def start_attempt(
        self,
        cell: str,
        method: str,
        instance: Instance,
        path: str,
        attempt: int,
        headers: MutableMapping[str, str],
    ) -> Any:
        """Stamp ``headers`` with the trace context; the attempt's span when recording."""
        if not self.records():
            self.propagate(headers)
            return None
        attributes: dict[str, Any] = {
            _METHOD: method,
            _TARGET: cell,
            url_attributes.URL_FULL: instance.url + path,  # made only for a recorded span
        }
        if attempt > 1:
            attributes[http_attributes.HTTP_REQUEST_RESEND_COUNT] = attempt - 1
        span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return span

    @staticmethod
    def propagate(headers: MutableMapping[str, str]) -> None:
        """Spans not recorded: pass on the trace of the request being served, if any."""
        if _get_current() is None:
            return
        request = current_request()
        if request is not None:
            headers[TRACEPARENT] = request.outgoing()
            if request.tracestate:
                headers[TRACESTATE] = request.tracestate

    @staticmethod
    def end_attempt(span: Any, outcome: Any) -> None:
        if isinstance(outcome, int):
            span.set_attribute(_STATUS, outcome)
            if outcome >= 400:
                span.set_attribute(_ERROR, str(outcome))
                span.set_status(Status(StatusCode.ERROR))
        else:
            span.set_attribute(_ERROR, outcome)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def start_local(self, cell: str, method: str, operation: str) -> tuple[Any, Any, Any]:
        """The client and server spans of an in-process call, the server span current."""
        client = self._tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={_METHOD: method, _TARGET: cell, "orchestro.transport": "local"},
        )
        server = self._tracer.start_span(
            f"{method} {cell}.{operation}",
            context=trace.set_span_in_context(client),
            kind=SpanKind.SERVER,
            attributes={_METHOD: method, CELL_ATTRIBUTE: cell, "orchestro.transport": "local"},
        )
        return client, server, otel_context.attach(trace.set_span_in_context(server))

    def end_local(self, spans: tuple[Any, Any, Any], outcome: Any) -> None:
        client, server, token = spans
        otel_context.detach(token)
        self.end_attempt(server, outcome)
        self.end_attempt(client, outcome)


def registry_counts(view: RegistryView) -> list[tuple[dict[str, str], float]]:
    """The instances of each cell the view holds, by state (the process's root mesh)."""
    if not view.loaded:
        return []
    counts: dict[tuple[str, str], int] = {}
    for cell, instances in view.cells().items():
        for i in instances:
            counts[cell, str(i.state)] = counts.get((cell, str(i.state)), 0) + 1
    return [
        ({"orchestro.registry.cell": cell, "orchestro.instance.state": state}, n)
        for (cell, state), n in counts.items()
    ]


def no_counts() -> list[tuple[dict[str, str], float]]:
    """A binding's registry counts: none (its root counts them, once per process)."""
    return []
