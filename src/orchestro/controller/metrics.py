"""The controller's metrics: replicas desired, running and ready per cell (read when
collected), and its events counted by kind (``crashed`` counts restarts, ``scaled``
scaling decisions). Served on the admin API's ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..observability.telemetry import get_telemetry
from .events import Event, EventLog
from .replicas import CellGroup

__all__ = ["instrument"]


def instrument(key: object, groups: Mapping[str, CellGroup], events: EventLog) -> None:
    """Measure the cells in ``groups`` (observers registered under ``key``) and ``events``."""
    producer = get_telemetry().producer

    def gauge(name: str, description: str, value: Callable[[CellGroup], float]) -> None:
        family = producer.gauge(name, "{replica}", description)
        family.observers[key] = lambda: [
            ({"orchestro.cell": g.name}, value(g)) for g in list(groups.values())
        ]

    gauge(
        "orchestro.controller.replicas.desired",
        "Replicas the controller wants.",
        lambda g: g.desired,
    )
    gauge(
        "orchestro.controller.replicas.actual",
        "Replicas running (not draining).",
        lambda g: len(g.serving),
    )
    gauge(
        "orchestro.controller.replicas.ready",
        "Replicas answering their pings.",
        lambda g: sum(1 for r in g.replicas if r.state == "ready"),
    )
    counter = producer.counter(
        "orchestro.controller.events",
        "{event}",
        "Controller events by kind: crashed (restarts), scaled (scaling decisions), ...",
    )

    def count(event: Event) -> None:
        counter.add(1, {"orchestro.cell": event.cell, "orchestro.event": event.kind})

    events.hooks.insert(0, count)
