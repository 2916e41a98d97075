"""The cell controller: replicas, supervision, auto-scaling, events and actions.

``python -m orchestro run TARGET --replicas N`` (or a cell's ``Scaling(min=, max=)``) runs
each cell as supervised replica processes behind one port (:mod:`.supervisor`), sized by the
scaler (:mod:`.scaler`). Every decision is an :class:`Event`; a module can react to them and
request actions::

    from orchestro import controller

    @controller.on_event
    def more_payments_when_orders_panic(event, actions):
        if event.cell == "orders" and event.kind == "scaled" and event.data.get("panicking"):
            actions.scale("payments", 4)

Hooks run in the controller process (they are registered when it imports the target) and
must not block; an exception in a hook is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..cell.scaling import Scaling
from .events import Event, EventLog
from .scaler import Decision, Sample, Scaler

__all__ = [
    "Actions",
    "Decision",
    "Event",
    "EventLog",
    "Sample",
    "Scaler",
    "Scaling",
    "event_hooks",
    "on_event",
]


class Actions(Protocol):
    """What a hook may ask the controller to do."""

    def scale(self, cell: str, replicas: int) -> None:
        """Set the desired replicas of ``cell`` (within its min..max)."""

    def restart(self, cell: str, replica: int) -> None:
        """Drain replica number ``replica`` of ``cell``; a new one replaces it."""


EventHook = Callable[[Event, Actions], Any]
_hooks: list[EventHook] = []


def on_event(hook: EventHook) -> EventHook:
    """Register ``hook(event, actions)``, called for every controller event."""
    _hooks.append(hook)
    return hook


def event_hooks() -> list[EventHook]:
    return list(_hooks)
