"""Observability: OpenTelemetry metrics and traces, Prometheus endpoints, structured logs.

Every cell is measured and traced from its first request; a cell adds its own telemetry with
the same tools::

    from orchestro import observability

    meter = observability.meter("shop.orders")
    placed = meter.create_counter("shop.orders.placed", unit="{order}")
    tracer = observability.tracer("shop.orders")

    @service(method="POST", path="/orders")
    async def place(self, order: Order) -> Placed:
        with tracer.start_as_current_span("check stock"):
            ...
        placed.add(1, {"shop.channel": order.channel})
        observability.log_fields(order_id=order.id)   # on every later log line of the request
        log.info("placed")

Metrics made this way appear on the cell's ``/metrics`` next to orchestro's own; spans join
the request's trace; log lines carry its trace id. See ``docs/concepts/observability.md``.
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from .context import RequestContext, current_request, log_fields, trace_ids
from .logs import ContextFilter, JsonFormatter, TextFormatter, configure_logging
from .telemetry import Telemetry, configure, get_telemetry

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "RequestContext",
    "Telemetry",
    "TextFormatter",
    "configure",
    "configure_logging",
    "current_request",
    "get_telemetry",
    "log_fields",
    "meter",
    "trace_ids",
    "tracer",
]


def meter(name: str, version: str | None = None) -> metrics.Meter:
    """A meter of the process's ``MeterProvider``; usable at import time, before start-up
    (OpenTelemetry's proxy binds it once the provider is set)."""
    return metrics.get_meter(name, version or "")


def tracer(name: str, version: str | None = None) -> trace.Tracer:
    """A tracer of the process's ``TracerProvider`` (see :func:`meter`)."""
    return trace.get_tracer(name, version)
