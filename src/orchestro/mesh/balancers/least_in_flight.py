"""Least in flight: the instance answering the fewest of this process's requests."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import EndpointStats

__all__ = ["LeastInFlight"]


class LeastInFlight:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(
        self, endpoints: Sequence[EndpointStats], key: str | None, now: float
    ) -> EndpointStats:
        fewest = min(e.in_flight for e in endpoints)
        tied = [e for e in endpoints if e.in_flight == fewest]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)
