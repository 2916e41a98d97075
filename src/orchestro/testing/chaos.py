"""Seeded chaos: a schedule of faults, drawn from a seed, that a test replays exactly.

```python
plan = FaultPlan(
    Phase(calls=20),                                  # warm-up: no faults
    Phase(calls=100, error=0.1, delay=0.2, drop=0.05),
    Phase(calls=50, kill=0.05, down=10),
    seed=1234,
)
faults = FaultInjector().follow(plan)
async with Mesh(registry, transport=faults) as calls:
    ...
print(plan.report())   # the seed, the phases, and every fault injected
```

Time in a plan is counted in *calls*: the n-th call that crosses the transport to a cell (each
attempt of a retried call counts) gets the fault the seed drew for ``(cell, n)``, whatever
the machine's speed — so a replay is exact for calls made one after another. Each cell has
its own stream of draws, so adding calls to one cell does not shift another's faults.
Concurrent calls to one cell still get the same schedule, but which of them draws which
number depends on the order the event loop starts them.
"""

from __future__ import annotations

import enum
import os
import random
from collections.abc import Collection
from dataclasses import dataclass, field, fields

from ..registry.base import Instance

__all__ = ["Fault", "FaultKind", "FaultPlan", "Phase"]


class FaultKind(enum.StrEnum):
    KILL = "kill"  # the instance dies: this call and the next ones to it are refused
    REFUSED = "refused"  # a call to an instance killed earlier
    DROP = "drop"  # the request reaches the cell; the answer is lost
    ERROR = "error"  # answered with an error status (problem+json)
    DELAY = "delay"  # held before it is sent, spending its deadline


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of ``calls`` calls to each cell (``None``: to the end of the test) with
    faults at these rates (shares of calls, 0 to 1, summing to at most 1).

    Args:
        kill: the call's instance dies; calls to it are refused for the next ``down`` calls
            to its cell, then it is back.
        drop: the call reaches the cell but its answer is lost (a reset after sending: only
            idempotent calls may be retried).
        error: answered with ``status``.
        delay: held ``delay_seconds`` before it is sent.
    """

    calls: int | None = None
    kill: float = 0.0
    drop: float = 0.0
    error: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 0.1
    status: int = 503
    down: int = 10

    def __post_init__(self) -> None:
        for name in ("kill", "drop", "error", "delay"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Phase({name}={rate!r}): a rate is a share of calls; give 0 to 1")
        if self.kill + self.drop + self.error + self.delay > 1.0 + 1e-9:
            raise ValueError(
                f"Phase: kill + drop + error + delay is "
                f"{self.kill + self.drop + self.error + self.delay:g}; each call gets at most "
                "one fault, so the rates must sum to at most 1"
            )
        if self.calls is not None and self.calls < 1:
            raise ValueError(f"Phase(calls={self.calls!r}): give 1 or more, or None for no end")
        if self.delay_seconds < 0:
            raise ValueError(f"Phase(delay_seconds={self.delay_seconds!r}): give 0 or more")
        if not 400 <= self.status <= 599:
            raise ValueError(f"Phase(status={self.status!r}): give an error status, 400 to 599")
        if self.down < 1:
            raise ValueError(f"Phase(down={self.down!r}): give 1 or more calls")

    def __repr__(self) -> str:
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"Phase({', '.join(changed)})"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault of a plan: the ``call``-th call to ``cell`` got ``kind``."""

    cell: str
    call: int
    kind: FaultKind
    url: str = ""  # the instance it hit (empty in a schedule computed ahead of the calls)
    seconds: float = 0.0
    status: int = 0

    def __str__(self) -> str:
        detail = {
            FaultKind.ERROR: f" {self.status}",
            FaultKind.DELAY: f" {self.seconds:g} s",
        }.get(self.kind, "")
        where = f" ({self.url})" if self.url else ""
        return f"{self.cell} call {self.call}{where}: {self.kind.value}{detail}"


@dataclass(slots=True)
class _CellState:
    rng: random.Random
    calls: int = 0
    dead: dict[str, int] = field(default_factory=dict)  # url -> last call it is down for


class FaultPlan:
    """A schedule of kill, drop, error and delay faults drawn from ``seed``.

    Give it to a :class:`FaultInjector` with ``follow(plan)``. Without a ``seed`` one is
    drawn at random; either way :meth:`report` (and the ``fault_plan`` pytest fixture, on a
    failure) prints it, so that the run can be replayed. ``cells`` limits the plan to calls
    to those cells. After the last phase, no more faults.
    """

    def __init__(
        self, *phases: Phase, seed: int | None = None, cells: Collection[str] | None = None
    ) -> None:
        if not phases:
            raise ValueError("FaultPlan() needs at least one Phase, e.g. Phase(error=0.1)")
        for n, phase in enumerate(phases):
            if not isinstance(phase, Phase):
                raise TypeError(f"FaultPlan: phase {n + 1} is {phase!r}; give Phase(...) objects")
            if phase.calls is None and n < len(phases) - 1:
                raise ValueError(
                    f"FaultPlan: phase {n + 1} has no end (calls=None) but phases follow it; "
                    "give it calls=N"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"FaultPlan(seed={seed!r}): give an int (or nothing for a random one)")
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
        self.phases = phases
        self.cells = frozenset(cells) if cells is not None else None
        self.log: list[Fault] = []  # every fault injected, in order
        self._state: dict[str, _CellState] = {}

    def _rng(self, cell: str) -> random.Random:
        # A string seed is hashed with SHA-512 by random.Random: stable across runs and
        # machines, unlike hash().
        return random.Random(f"orchestro-fault-plan/{self.seed}/{cell}")

    def _phase(self, call: int) -> Phase | None:
        start = 0
        for phase in self.phases:
            if phase.calls is None or call <= start + phase.calls:
                return phase
            start += phase.calls
        return None

    @staticmethod
    def _kind(phase: Phase, draw: float) -> FaultKind | None:
        edge = 0.0
        for kind, rate in (
            (FaultKind.KILL, phase.kill),
            (FaultKind.DROP, phase.drop),
            (FaultKind.ERROR, phase.error),
            (FaultKind.DELAY, phase.delay),
        ):
            edge += rate
            if draw < edge:
                return kind
        return None

    def _fault(self, cell: str, call: int, draw: float, url: str = "") -> Fault | None:
        phase = self._phase(call)
        kind = None if phase is None else self._kind(phase, draw)
        if phase is None or kind is None:
            return None
        return Fault(
            cell, call, kind, url,
            seconds=phase.delay_seconds if kind is FaultKind.DELAY else 0.0,
            status=phase.status if kind is FaultKind.ERROR else 0,
        )  # fmt: skip

    def schedule(self, cell: str, calls: int) -> list[Fault]:
        """The faults calls 1 to ``calls`` to ``cell`` would get (kills without the refusals
        that follow them, which depend on where the calls go). Reads nothing it changes."""
        rng = self._rng(cell)
        found = (self._fault(cell, n, rng.random()) for n in range(1, calls + 1))
        return [fault for fault in found if fault is not None]

    def draw(self, instance: Instance) -> Fault | None:
        """The fault for the next call to ``instance`` (``None``: none), recorded in
        :attr:`log`. Called by :class:`FaultInjector` for every call it sends."""
        if self.cells is not None and instance.cell not in self.cells:
            return None
        state = self._state.get(instance.cell)
        if state is None:
            state = self._state[instance.cell] = _CellState(self._rng(instance.cell))
        state.calls += 1
        draw = state.rng.random()  # always one draw per call: the stream never shifts
        until = state.dead.get(instance.url)
        if until is not None and state.calls <= until:
            fault: Fault | None = Fault(instance.cell, state.calls, FaultKind.REFUSED, instance.url)
        else:
            state.dead.pop(instance.url, None)
            fault = self._fault(instance.cell, state.calls, draw, instance.url)
            if fault is not None and fault.kind is FaultKind.KILL:
                phase = self._phase(state.calls)
                assert phase is not None
                state.dead[instance.url] = state.calls + phase.down
        if fault is not None:
            self.log.append(fault)
        return fault

    def __repr__(self) -> str:
        parts = [repr(phase) for phase in self.phases]
        if self.cells is not None:
            parts.append(f"cells={sorted(self.cells)!r}")
        parts.append(f"seed={self.seed}")
        return f"FaultPlan({', '.join(parts)})"

    def report(self) -> str:
        """The plan (enough to replay it) and the faults injected so far, one a line."""
        counts = dict.fromkeys(FaultKind, 0)
        for fault in self.log:
            counts[fault.kind] += 1
        summary = ", ".join(f"{n} {kind.value}" for kind, n in counts.items() if n) or "none"
        lines = [f"replay with: {self!r}", f"faults injected: {summary}"]
        lines.extend(f"  {fault}" for fault in self.log)
        return "\n".join(lines)
