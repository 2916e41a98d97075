"""Round robin: each instance in turn."""

from __future__ import annotations

from collections.abc import Sequence

from .base import EndpointStats

__all__ = ["RoundRobin"]


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, endpoints: Sequence[EndpointStats], key: str | None, now: float
    ) -> EndpointStats:
        chosen = endpoints[self._next % len(endpoints)]
        self._next += 1
        return chosen
