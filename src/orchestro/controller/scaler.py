"""The scaler: how many replicas a cell needs, as a pure function of load samples and time.

It follows the public algorithms it is named after, with their defaults:

- **Knative's KPA** — a target per replica (concurrency by default, 100 in-flight requests
  at 70% utilisation), averaged over a *stable window* (60 s) and a *panic window* (10% of
  it, 6 s). When the panic window's load needs twice the replicas there are (the *panic
  threshold*, 200%), the scaler panics: it scales on the panic window and never scales down
  until the load has stayed below the threshold for a whole stable window. Scale-up is
  capped at 1000 times and scale-down at half of the ready replicas per decision.
- **Kubernetes' HPA** — a *tolerance* (10%): no change while the load is within 10% of what
  the current replicas are meant to carry; and a *scale-down stabilisation window* (300 s):
  scale down only to the highest recommendation of the window, so a dip does not remove
  replicas that the next burst needs.

``rps`` and ``cpu`` are targets per replica like concurrency; ``latency`` (p95 seconds) uses
the HPA's ratio rule on the average (``ready * observed / target``).

```python
scaler = Scaler(Scaling(min=1, max=10, target=10))
decision = scaler.decide(samples, ready=2, now=clock.now())   # Decision(desired=4, ...)
```
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..cell.scaling import Scaling

__all__ = ["Decision", "Sample", "Scaler"]

# The scale of each metric's target: per replica (additive metrics) or the value itself.
_ADDITIVE = {"concurrency": True, "rps": True, "cpu": True, "latency": False}


@dataclass(frozen=True, slots=True)
class Sample:
    """The cell's load at ``time``: the sum over ready replicas for concurrency, rps and cpu;
    the p95 latency for latency."""

    time: float
    value: float


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    reason: str
    panicking: bool
    stable: float  # the stable window's average load
    panic: float  # the panic window's average load


class Scaler:
    """Decides desired replicas for one cell; keeps only what the algorithms need
    (when panic started, recent recommendations), never reads a clock itself."""

    def __init__(self, scaling: Scaling) -> None:
        self.scaling = scaling
        self.panic_since: float | None = None
        self._panic_desired = 0
        self._recommendations: deque[tuple[float, int]] = deque()

    def decide(
        self, samples: Sequence[Sample], ready: int, now: float, current: int | None = None
    ) -> Decision:
        """Desired replicas given ``samples`` (oldest first) and ``ready`` replicas at ``now``.

        ``current`` is the desired count so far (default: ``ready``): holding still means
        keeping it, so a replica that crashed (fewer ready for a moment) is replaced rather
        than scaled away.
        """
        if current is None:
            current = ready
        s = self.scaling
        stable_window = s.stable_window
        panic_window = stable_window * s.panic_window
        stable = _average(samples, now - stable_window, now)
        panic = _average(samples, now - panic_window, now)
        if stable is None or panic is None:
            desired = max(s.min, min(s.max, current or s.min))
            return Decision(desired, "no load measured yet", False, 0.0, 0.0)
        want_stable = self._replicas(stable, ready)
        want_panic = self._replicas(panic, ready)
        base = max(ready, 1)
        # Knative's rate limits, from the ready replicas.
        up_cap = math.ceil(s.max_scale_up_rate * base)
        down_floor = math.floor(base / s.max_scale_down_rate)
        want_stable = min(max(want_stable, down_floor), up_cap)
        want_panic = min(max(want_panic, down_floor), up_cap)

        if want_panic / base >= s.panic_threshold and ready > 0:
            if self.panic_since is None:
                self._panic_desired = ready
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= stable_window:
            self.panic_since = None  # a whole stable window below the threshold
        panicking = self.panic_since is not None

        if panicking:
            # Scale on the panic window, never down while panicking.
            desired = max(want_panic, self._panic_desired, current)
            self._panic_desired = desired
            reason = f"panic: {panic:.1f} over the last {panic_window:g} s"
        elif abs(self._ratio(stable, ready) - 1.0) <= s.tolerance and ready > 0:
            desired = current
            reason = f"within {s.tolerance:.0%} of the target"
        else:
            desired = want_stable
            reason = f"stable: {stable:.1f} over the last {stable_window:g} s"

        # The HPA's scale-down stabilisation: the highest recommendation of the window.
        self._recommendations.append((now, desired))
        while self._recommendations and self._recommendations[0][0] < now - s.scale_down_delay:
            self._recommendations.popleft()
        if desired < current:
            held = max(r for _, r in self._recommendations)
            if held > desired:
                desired = min(held, current)
                reason += f"; scale-down held for {s.scale_down_delay:g} s"
        bounded = max(s.min, min(s.max, desired))
        if bounded != desired:
            reason += f"; bounded to {s.min}..{s.max}"
        return Decision(bounded, reason, panicking, stable, panic)

    def _replicas(self, load: float, ready: int) -> int:
        s = self.scaling
        if _ADDITIVE[s.metric]:
            return math.ceil(load / s.per_replica - 1e-9)
        return math.ceil(max(ready, 1) * load / s.per_replica - 1e-9)

    def _ratio(self, load: float, ready: int) -> float:
        """Load over what the ready replicas are meant to carry."""
        s = self.scaling
        if _ADDITIVE[s.metric]:
            return load / (s.per_replica * max(ready, 1))
        return load / s.per_replica


def _average(samples: Sequence[Sample], start: float, end: float) -> float | None:
    values = [x.value for x in samples if start < x.time <= end]
    return sum(values) / len(values) if values else None
