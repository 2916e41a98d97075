"""Controller events: every decision is one, logged, counted, kept, and given to hooks."""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Event", "EventLog"]

_log = logging.getLogger("orchestro.controller")


@dataclass(frozen=True, slots=True)
class Event:
    """``kind``: started, ready, crashed, restart-delayed, hung, killed, draining, stopped,
    scaled, health-changed, stopping, reloaded, reload-failed, rolled."""

    seq: int
    time: float
    kind: str
    cell: str
    replica: int | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


Hook = Callable[[Event], Any]

# Events that mean something went wrong (logged as warnings); the others are INFO.
_WARNINGS = frozenset({"crashed", "hung", "killed", "restart-delayed", "reload-failed"})


class EventLog:
    """The controller's recent events (a bounded list) and the hooks that see each one."""

    def __init__(self, keep: int = 500) -> None:
        self.recent: deque[Event] = deque(maxlen=keep)
        self.hooks: list[Hook] = []
        self.counts: dict[tuple[str, str], int] = {}
        self._seq = itertools.count(1)

    def emit(
        self,
        kind: str,
        cell: str,
        replica: int | None = None,
        detail: str = "",
        **data: Any,
    ) -> Event:
        event = Event(next(self._seq), time.time(), kind, cell, replica, detail, data)
        self.recent.append(event)
        self.counts[cell, kind] = self.counts.get((cell, kind), 0) + 1
        where = f"{cell}[{replica}]" if replica is not None else cell
        level = logging.WARNING if kind in _WARNINGS else logging.INFO
        _log.log(
            level,
            "%s %s%s",
            where,
            kind,
            f": {detail}" if detail else "",
            extra={"event": kind, "replica": replica, **data},
        )
        for hook in list(self.hooks):
            try:
                hook(event)
            except Exception:  # a user's hook never stops the controller
                _log.exception("event hook %r failed on %s", hook, kind)
        return event

    def since(self, seq: int) -> list[Event]:
        return [e for e in self.recent if e.seq > seq]
