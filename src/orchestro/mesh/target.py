"""What the mesh keeps per target cell, and what one attempt chose.

A :class:`Target` holds a cell's load statistics, balancer, outlier detector, retry budget
and recent latencies (for hedging), under one call policy; a :class:`Pick` is one attempt's
instance, request and headers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from tenacity import wait_random_exponential

from ..registry import Instance
from .balancers import Balancer, EndpointStats, make_balancer
from .breaker import OutlierDetector
from .budget import RetryBudget
from .clock import Clock
from .policy import CallPolicy
from .transports.base import CallRequest

__all__ = ["DRAINING_MARK", "MAX_TARGETS", "AttemptTimer", "Pick", "Target", "TargetTable"]

# How long an instance that answered "draining" is skipped (seconds). The mark bridges the
# registry view's lag (a poll or a TTL of a few seconds); it must expire on its own, since for
# URL targets, static:// registries and a pod restarted in place (same id) the view never
# drops the instance, and a mark kept forever would make it unreachable from this caller.
DRAINING_MARK = 5.0
MAX_TIMERS = 256  # attempt timers kept per target (operations, or raw paths)


class AttemptTimer:
    """The attempt timeout derived from observed latency, as TCP derives its retransmission
    timeout (RFC 6298, section 2): a smoothed latency and its mean deviation, updated by each
    answered attempt (gain 1/8 and 1/4), the timeout their sum with four deviations, never
    under a floor. Only answers are samples (Karn's rule): an attempt that timed out says
    nothing about how long an answer takes, and counting it would let one partition stretch
    the timeout it is detected by. No sample yet: no attempt timeout (the call's own)."""

    __slots__ = ("rttvar", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def observe(self, sample: float) -> None:
        srtt = self.srtt
        if srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - sample)
            self.srtt = 0.875 * srtt + 0.125 * sample

    def timeout(self, floor: float) -> float | None:
        if self.srtt is None:
            return None
        return max(floor, self.srtt + 4 * self.rttvar)


class Target:
    """What the mesh keeps per target cell: load statistics, balancer, ejection, budget."""

    def __init__(self, policy: CallPolicy, clock: Clock) -> None:
        self.policy = policy
        self.balancer: Balancer = make_balancer(policy.balancer)
        self.detector = OutlierDetector(
            consecutive_failures=policy.consecutive_failures,
            base_ejection=policy.base_ejection,
            max_ejection=policy.max_ejection,
            max_ejected_share=policy.max_ejected_share,
            interval=policy.success_rate_interval,
            min_requests=policy.success_rate_min_requests,
            min_hosts=policy.success_rate_min_hosts,
            stdev_factor=policy.success_rate_stdev_factor,
            clock=clock,
        )
        self.budget = RetryBudget(
            ratio=policy.retry_budget_ratio,
            min_per_second=policy.retry_budget_min_per_second,
            window=policy.retry_budget_window,
            clock=clock,
        )
        self.detector.on_restore = self._restored
        self.stats: dict[str, EndpointStats] = {}
        # Attempt timers per operation (a cell's fast and slow operations must not share
        # one): keys are operation names, or "METHOD path" for raw calls (bounded).
        self.timers: dict[str, AttemptTimer] = {}
        self.latencies: deque[float] = deque(maxlen=256)  # recent successful attempts
        # The last view of the cell's instances, indexed (rebuilt when the view changes).
        self.seen: tuple[Instance, ...] | None = None
        self.viewed: tuple[Instance, ...] | None = None  # the view's tuple, as last read
        self.by_id: dict[str, Instance] = {}
        self.ids: list[str] = []
        self.all_stats: list[EndpointStats] = []
        # Instances that answered "draining" -> when the mark expires (DRAINING_MARK after
        # the answer), skipped meanwhile unless every candidate is marked: the view lags the
        # instance by a poll or more, and every request sent there meanwhile races the
        # instance closing its connections.
        self.draining: dict[str, float] = {}
        self.used = 0  # the mesh's use count at this target's last call (its cap is LRU)
        self.wait = wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max)

    def timer(self, request: CallRequest) -> AttemptTimer:
        """The attempt timer of ``request``'s operation."""
        key = request.operation or request.path
        found = self.timers.get(key)
        if found is None:
            if len(self.timers) >= MAX_TIMERS:
                self.timers.clear()  # raw paths with ids in them: start again, bounded
            found = self.timers[key] = AttemptTimer()
        return found

    def attempt_timeout(self, request: CallRequest) -> float | None:
        """Seconds an idempotent attempt of ``request`` may take (None: the call's whole
        timeout)."""
        if self.policy.attempt_timeout is not None:
            return self.policy.attempt_timeout
        found = self.timers.get(request.operation or request.path)
        return None if found is None else found.timeout(self.policy.attempt_timeout_min)

    def _restored(self, instance_id: str) -> None:
        """An ejected instance answered its probe: its latency history is from before the
        fault (a timeout's worth, decaying for tens of seconds) and would keep a latency-based
        balancer away from it long after it recovered. It starts afresh, as a new instance;
        its first answers set its latency at once (the peak is believed)."""
        found = self.stats.get(instance_id)
        if found is not None:
            found.ewma = 0.0
            found.stamp = 0.0

    def hedge_delay(self) -> float | None:
        """When to send a backup request, or None while there is too little history."""
        if self.policy.hedge_delay is not None:
            return self.policy.hedge_delay
        if len(self.latencies) < 20:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(self.policy.hedge_percentile * len(ordered)))]

    def forget(self, live: set[str]) -> None:
        """Drop what is kept about instances that left the registry (``live``: the ids it
        still lists): instance ids are unique per process start, so a caller that kept them
        would grow with every restart and every autoscaling step."""
        gone = [iid for iid in self.stats if iid not in live]
        for iid in gone:
            del self.stats[iid]
        self.detector.forget(live)
        self.draining = {iid: until for iid, until in self.draining.items() if iid in live}

    def mark_draining(self, instance_id: str, now: float) -> None:
        """``instance_id`` answered "draining": skip it for :data:`DRAINING_MARK` seconds."""
        self.draining[instance_id] = now + DRAINING_MARK

    def skip_draining(self, instances: tuple[Instance, ...], now: float) -> tuple[Instance, ...]:
        """``instances`` without those marked draining (expired marks dropped); all of them if
        every one is marked: the mark alone never leaves a call without a candidate."""
        expired = [iid for iid, until in self.draining.items() if until <= now]
        for iid in expired:
            del self.draining[iid]
        if not self.draining:
            return instances
        kept = tuple(i for i in instances if i.id not in self.draining)
        if not kept:
            return instances
        if kept == self.seen:
            return self.seen  # keep the index
        return kept

    def stat(self, instance_id: str) -> EndpointStats:
        found = self.stats.get(instance_id)
        if found is None:
            found = self.stats[instance_id] = EndpointStats(instance_id)
        return found


class Pick:
    """One attempt's choices: the instance, its statistics, the request to send."""

    __slots__ = (
        "capped",
        "ended",
        "headers",
        "ids",
        "instance",
        "remaining",
        "request",
        "span",
        "started",
        "stats",
    )

    def __init__(
        self,
        stats: EndpointStats,
        instance: Instance,
        request: CallRequest,
        headers: dict[str, str],
        started: float,
        remaining: float,
        ids: list[str],
        capped: bool = False,
    ) -> None:
        self.stats = stats
        self.instance = instance
        self.request = request
        self.headers = headers
        self.started = started
        self.remaining = remaining  # seconds this attempt may take
        self.capped = capped  # remaining is the attempt timeout, not the call's deadline
        self.ids = ids
        self.ended = started
        self.span: Any = None


# Bounds on what is kept per policy: a Target per (cell, policy value). Code that makes a
# policy per call would otherwise grow the table forever.
MAX_TARGETS = 256


class TargetTable:
    """The :class:`Target` of each (cell, policy value): equal policies share one, at most
    :data:`MAX_TARGETS` (the least recently used is dropped, and made again from scratch if it
    is needed later).

    It is indexed by the policy object's identity too (hashing a pydantic model costs
    microseconds a call); the index keeps the policy object, so that its id cannot be reused
    while indexed. Each call stamps its target with a use count (not ``move_to_end``: that
    would hash the policy on every call), and the cap drops the least recently used one: the
    hottest target is usually the oldest.
    """

    __slots__ = ("_by_value", "_clock", "_index", "_made", "_uses")

    def __init__(self, clock: Clock, made: Callable[[str, Target], None]) -> None:
        self._clock = clock
        self._made = made  # told of each new target (telemetry counts its ejections)
        self._by_value: dict[tuple[str, CallPolicy], Target] = {}
        self._index: dict[tuple[str, int], tuple[CallPolicy, Target]] = {}
        self._uses = 0

    def get(self, cell: str, policy: CallPolicy) -> Target:
        """The target for a call to ``cell`` under ``policy``, stamped as just used."""
        indexed = self._index.get((cell, id(policy)))
        if indexed is not None and indexed[0] is policy:
            target = indexed[1]
        else:
            target = self._make(cell, policy)
        self._uses += 1
        target.used = self._uses
        return target

    def _make(self, cell: str, policy: CallPolicy) -> Target:
        by_value = (cell, policy)
        target = self._by_value.get(by_value)
        if target is None:
            if len(self._by_value) >= MAX_TARGETS:
                stale = min(self._by_value, key=lambda key: self._by_value[key].used)
                del self._by_value[stale]
                self._index.clear()  # may index the one dropped; rebuilt on use
            target = self._by_value[by_value] = Target(policy, self._clock)
            self._made(cell, target)
        if len(self._index) >= 4 * MAX_TARGETS:
            self._index.clear()  # policy objects made per call: rebuilt on use
        self._index[cell, id(policy)] = (policy, target)
        return target

    def find(self, cell: str, policy: CallPolicy) -> Target | None:
        """The target of ``cell`` under ``policy`` if one exists (not stamped)."""
        return self._by_value.get((cell, policy))

    def breaker_states(self) -> list[tuple[str, str, str]]:
        """``(cell, instance, state)`` of every instance's outlier detector."""
        found = {}
        for (cell, _), target in list(self._by_value.items()):
            for iid in target.ids:
                found[cell, iid] = target.detector.state(iid)
        return [(cell, iid, state) for (cell, iid), state in found.items()]

    def retained(self) -> dict[str, int]:
        """How much per-instance and per-policy state is held: entries, not bytes."""
        targets = list(self._by_value.values())
        return {
            "targets": len(self._by_value),
            "target_index": len(self._index),
            "stats": sum(len(t.stats) for t in targets),
            "health": sum(t.detector.tracked() for t in targets),
            "indexed": sum(len(t.by_id) for t in targets),
        }
