"""A clock tests move by hand: policies take a clock, so they are tested without sleeping."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """``now()`` returns what the test set; ``advance(seconds)`` moves it forward.

    ```python
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    clock.advance(11)  # the window has passed
    ```
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
