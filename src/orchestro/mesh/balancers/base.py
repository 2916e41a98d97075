"""The balancer protocol and the per-instance load statistics balancers read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Balancer", "EndpointStats"]


class EndpointStats:
    """Load of one instance as this process sees it: requests in flight and a peak-EWMA of
    latency (Finagle's ``PeakEwma``: a slower observation is taken at once, a faster one
    decays in with time constant ``decay`` seconds)."""

    __slots__ = ("decay", "ewma", "id", "in_flight", "stamp")

    def __init__(self, instance_id: str, *, decay: float = 10.0) -> None:
        self.id = instance_id
        self.in_flight = 0
        self.ewma = 0.0
        self.stamp = 0.0
        self.decay = decay

    def observe(self, latency: float, now: float) -> None:
        ewma = self.ewma
        if latency > ewma:
            self.ewma = latency  # the peak is believed at once
        else:
            elapsed = now - self.stamp
            if elapsed < 0.001 * self.decay:
                # exp(-x) ~ 1 - x, off by under 5e-7 here: busy instances see this on
                # nearly every call, and math.exp costs more than the rest of this method.
                if elapsed > 0.0:
                    self.ewma = ewma + (latency - ewma) * (elapsed / self.decay)
            else:
                weight = math.exp(-elapsed / self.decay)
                self.ewma = ewma * weight + latency * (1.0 - weight)
        self.stamp = now

    def cost(self, now: float) -> float:
        # Decay towards zero while idle, so a once-slow instance is tried again.
        weight = math.exp(-max(0.0, now - self.stamp) / self.decay) if self.stamp else 1.0
        return (self.ewma * weight + 1e-6) * (self.in_flight + 1)


class Balancer(Protocol):
    def pick(
        self, endpoints: Sequence[EndpointStats], key: str | None, now: float
    ) -> EndpointStats:
        """Choose one of ``endpoints`` (never empty)."""
        ...
