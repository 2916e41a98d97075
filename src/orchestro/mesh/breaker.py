"""Per-instance circuit breaking by outlier ejection (Envoy's model).

An instance that fails ``consecutive_failures`` times in a row (default 5, Envoy's
``consecutive_5xx``) is ejected — no traffic — for ``base_ejection`` * the number of times it
has been ejected (default 30 s, as Envoy's ``base_ejection_time``), capped at
``max_ejection``. When that time is up it is half-open: it gets exactly one probe request; a
success closes it, a failure ejects it again for longer. Ejection never takes more than
``max_ejected_share`` of a cell's instances (Envoy's ``max_ejection_percent``, default 10%,
but at least one instance may be ejected), and never the last available one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .clock import Clock, MonotonicClock

__all__ = ["OutlierDetector"]

T = TypeVar("T")


@dataclass(slots=True)
class _Health:
    failures: int = 0  # consecutive
    ejections: int = 0
    ejected_until: float = 0.0
    probing: bool = False  # half-open: one probe in flight
    window_total: int = 0  # requests in the current success-rate interval
    window_ok: int = 0


class OutlierDetector:
    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejected_share: float = 0.1,
        interval: float = 10.0,
        min_requests: int = 100,
        min_hosts: int = 5,
        stdev_factor: float = 1.9,
        clock: Clock | None = None,
    ) -> None:
        self.interval = interval
        self.min_requests = min_requests
        self.min_hosts = min_hosts
        self.stdev_factor = stdev_factor
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.max_ejected_share = max_ejected_share
        self._clock = clock or MonotonicClock()
        self._health: dict[str, _Health] = {}
        self._ejected: set[str] = set()  # instances with an ejection in force or half-open
        self._window_ends = self._clock.now() + interval
        self.on_eject: Callable[[str], None] | None = None  # told of every ejection
        # Told when an ejected instance answers (its probe succeeded): it takes traffic again.
        self.on_restore: Callable[[str], None] | None = None

    def state(self, instance_id: str) -> str:
        """``closed`` (taking traffic), ``open`` (ejected) or ``half-open`` (may be probed)."""
        health = self._health.get(instance_id)
        if health is None or health.ejected_until == 0.0:
            return "closed"
        return "open" if self._clock.now() < health.ejected_until else "half-open"

    def available(self, ids: Sequence[str]) -> list[str]:
        """The instances that may take a request now (a half-open one only if its probe is
        not already in flight). Returns ``ids`` itself when none is ejected."""
        if not self._ejected:
            return ids  # type: ignore[return-value]
        now = self._clock.now()
        found = []
        for iid in ids:
            health = self._health.get(iid)
            closed = health is None or health.ejected_until == 0.0
            if closed or (now >= health.ejected_until and not health.probing):  # type: ignore[union-attr]
                found.append(iid)
        return found

    def on_pick(self, instance_id: str) -> None:
        """A request is about to go to ``instance_id``; a half-open instance is now probing."""
        if not self._ejected:
            return  # none is ejected or half-open: the common case
        health = self._health.get(instance_id)
        if (
            health is not None
            and health.ejected_until
            and self._clock.now() >= health.ejected_until
        ):
            health.probing = True

    def record(
        self, instance_id: str, success: bool, peers: Sequence[str], now: float | None = None
    ) -> None:
        """The outcome of a request to ``instance_id``, one of ``peers`` (the cell's
        instances), known at ``now`` (read from the clock when not given)."""
        if (self._clock.now() if now is None else now) >= self._window_ends:
            self._judge_success_rates(peers)
        health = self._health.get(instance_id)
        if health is None:
            health = self._health[instance_id] = _Health()
        health.window_total += 1
        if success:
            health.window_ok += 1
            if health.failures or health.ejected_until or health.probing:
                restored = health.ejected_until != 0.0
                health.failures = 0
                health.ejected_until = 0.0
                health.probing = False
                self._ejected.discard(instance_id)
                if restored and self.on_restore is not None:
                    self.on_restore(instance_id)
            return
        health.failures += 1
        if health.probing or (
            health.ejected_until == 0.0
            and health.failures >= self.consecutive_failures
            and self._may_eject(peers)
        ):
            health.probing = False
            self._eject(instance_id, health)

    def _judge_success_rates(self, peers: Sequence[str]) -> None:
        """End an interval: eject outliers by success rate, then start counting again."""
        self._window_ends = self._clock.now() + self.interval
        rates = {
            iid: health.window_ok / health.window_total
            for iid, health in self._health.items()
            if iid in peers and health.window_total >= self.min_requests
        }
        for health in self._health.values():
            health.window_total = health.window_ok = 0
        if len(rates) < self.min_hosts:
            return
        mean = sum(rates.values()) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates.values()) / len(rates))
        threshold = mean - self.stdev_factor * stdev
        for iid, rate in sorted(rates.items(), key=lambda item: item[1]):
            health = self._health[iid]
            if rate < threshold and health.ejected_until == 0.0 and self._may_eject(peers):
                self._eject(iid, health)

    def _eject(self, instance_id: str, health: _Health) -> None:
        """Eject for the base time times the ejections so far, up to the cap."""
        health.ejections += 1
        duration = min(self.max_ejection, self.base_ejection * health.ejections)
        health.ejected_until = self._clock.now() + duration
        self._ejected.add(instance_id)
        if self.on_eject is not None:
            self.on_eject(instance_id)

    def tracked(self) -> int:
        """How many instances this detector keeps state for."""
        return len(self._health)

    def forget(self, live: Sequence[str] | set[str]) -> None:
        """Drop the state of instances that left the registry."""
        keep = live if isinstance(live, set) else set(live)
        for iid in [i for i in self._health if i not in keep]:
            del self._health[iid]
            self._ejected.discard(iid)

    def _may_eject(self, peers: Sequence[str]) -> bool:
        ejected = sum(1 for p in peers if self.state(p) != "closed")
        cap = max(1, math.floor(self.max_ejected_share * len(peers)))
        return ejected < cap and len(peers) - ejected > 1
