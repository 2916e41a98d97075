"""The retry budget: retries (and hedges) may add at most a share of the traffic.

Finagle's and Linkerd's defaults: retries may be 20% of requests, plus 10 per second, over a
10 s window. When a target fails completely, retries therefore multiply the load by at most
1.2 (plus the small reserve) instead of by the attempt count — the difference between a
degraded service and a retry storm. An exhausted budget makes the call fail fast with
:class:`~orchestro.errors.RetryBudgetExhausted`.
"""

from __future__ import annotations

import math
from collections import deque

from .clock import Clock, MonotonicClock

__all__ = ["RetryBudget"]


class RetryBudget:
    """Counts requests and retries in one-second buckets over a sliding window."""

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if not 0 <= ratio <= 1 or min_per_second < 0 or window <= 0:
            raise ValueError("retry budget: ratio in [0, 1], min_per_second >= 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock or MonotonicClock()
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self._current: list[int] = [0, 0, 0]
        self._current_ends = -math.inf  # when the newest bucket's second is over

    def _bucket(self, now: float | None = None) -> list[int]:
        if now is None:
            now = self._clock.now()
        second = math.floor(now)
        horizon = second - math.ceil(self.window)
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        current = self._current = self._buckets[-1]
        self._current_ends = second + 1
        return current

    def record_request(self, now: float | None = None) -> None:
        """A first attempt was sent (at ``now``): it earns the budget ``ratio`` of a retry."""
        if now is not None and now < self._current_ends:
            self._current[1] += 1  # the common case: the newest bucket is still this second's
        else:
            self._bucket(now)[1] += 1

    def try_spend(self) -> bool:
        """Spend one retry if the budget allows it."""
        bucket = self._bucket()
        if self.balance < 1:
            return False
        bucket[2] += 1
        return True

    @property
    def balance(self) -> float:
        """Retries that may still be made now."""
        self._bucket()
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        return self.ratio * requests + self.min_per_second * self.window - retries
