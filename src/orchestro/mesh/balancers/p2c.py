"""Power of two choices over peak-EWMA latency * in-flight requests (Finagle, Linkerd).

Two instances drawn at random, the cheaper one wins: nearly as good as looking at all of
them, with no herd behaviour, and slow or busy instances shed traffic at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import EndpointStats

__all__ = ["PeakEwmaP2C"]


class PeakEwmaP2C:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(
        self, endpoints: Sequence[EndpointStats], key: str | None, now: float
    ) -> EndpointStats:
        count = len(endpoints)
        if count == 1:
            return endpoints[0]
        a = self._rng.randrange(count)
        b = self._rng.randrange(count - 1)
        if b >= a:
            b += 1
        first, second = endpoints[a], endpoints[b]
        return first if first.cost(now) <= second.cost(now) else second
