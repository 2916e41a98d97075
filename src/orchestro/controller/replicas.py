"""What the controller knows about each cell and its replicas, and the cell's shared socket.

A :class:`CellGroup` is one cell under supervision: its desired count, its replicas (each a
:class:`Replica`, with the load it last reported), the public listening socket every
replica inherits, and the load samples its scaler decides on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..cell.scaling import Scaling
from ..cell.spec import CellSpec
from ..errors import StartupError
from .scaler import Sample, Scaler

__all__ = ["CellGroup", "Replica", "SupervisorSettings", "listen", "url_host"]


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    ping_interval: float = 0.5
    ping_timeout: float = 1.0
    hung_after: int = 3  # failed pings in a row of a replica that was ready
    kill_grace: float = 5.0  # SIGTERM -> SIGKILL for a hung replica (it cannot drain)
    healthy_period: float = 10.0  # ready this long: the crash back-off starts over
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    drain_timeout: float = 30.0  # a draining replica is killed after this + KILL_MARGIN


@dataclass(eq=False)
class Replica:
    cell: str
    index: int
    started: float
    proc: asyncio.subprocess.Process | None = None  # None while it is being spawned
    state: str = "starting"  # starting, ready, unhealthy, draining, hung
    url: str | None = None
    ready_since: float | None = None
    failed_pings: int = 0
    in_flight: int = 0
    admitted: int = 0
    cpu: float = 0.0
    p95: float | None = None
    term_sent: float | None = None  # when it was sent SIGTERM
    kill_at: float | None = None  # when the controller sends SIGKILL if it is still there
    killed: bool = False
    exit_code: int | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def signal(self, signum: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "state": self.state,
            "url": self.url,
            "in_flight": self.in_flight,
            "uptime": round(time.monotonic() - self.started, 1),
        }


@dataclass(eq=False)
class CellGroup:
    spec: CellSpec
    scaling: Scaling
    desired: int
    sock: socket.socket
    replicas: list[Replica] = field(default_factory=list)
    crashes: int = 0  # in a row, without a healthy period between
    next_start: float = 0.0
    next_index: int = 0
    scaler: Scaler | None = None
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=4096))
    last_tick: float = 0.0
    last_admitted: int | None = None
    last_cpu: float | None = None
    to_roll: list[Replica] = field(default_factory=list)  # replicas a rolling restart replaces
    surge: Replica | None = None  # the new replica started for the next one of to_roll
    activator: bool = False  # scaled to zero: watching the shared socket for a connection
    last_busy: float = 0.0  # when a request was last seen in flight or admitted

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serving(self) -> list[Replica]:
        return [r for r in self.replicas if r.state not in ("draining", "hung")]

    def as_json(self) -> dict[str, Any]:
        return {
            "cell": self.name,
            "desired": self.desired,
            "actual": len(self.serving),
            "ready": sum(1 for r in self.replicas if r.state == "ready"),
            "min": self.scaling.min,
            "max": self.scaling.max,
            "autoscaling": self.scaler is not None,
            "port": self.sock.getsockname()[1],
            "replicas": [r.as_json() for r in self.replicas],
        }

    def sample(self, now: float) -> Sample | None:
        """Turn the ready replicas' load reports into one scaler sample (kept in
        ``samples``); None when there is nothing to judge (latency with no request)."""
        ready = [r for r in self.replicas if r.state == "ready"]
        elapsed = now - self.last_tick if self.last_tick else 0.0
        self.last_tick = now
        admitted = sum(r.admitted for r in ready)
        cpu = sum(r.cpu for r in ready)
        previous_admitted, previous_cpu = self.last_admitted, self.last_cpu
        self.last_admitted, self.last_cpu = admitted, cpu
        metric = self.scaling.metric
        value: float
        if metric == "concurrency":
            value = float(sum(r.in_flight for r in ready))
        elif metric == "rps":
            value = 0.0
            if previous_admitted is not None and elapsed:
                value = (admitted - previous_admitted) / elapsed
        elif metric == "cpu":
            value = 0.0
            if previous_cpu is not None and elapsed:
                value = (cpu - previous_cpu) / elapsed
        else:  # latency: the worst p95 the replicas saw since their last report
            latencies = [r.p95 for r in ready if r.p95 is not None]
            if not latencies:
                return None
            value = max(latencies)
        if not ready:
            return None
        found = Sample(now, max(0.0, value))
        self.samples.append(found)
        return found


def listen(host: str, port: int, cell: str) -> socket.socket:
    """The cell's public listening socket, which every replica inherits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot start cell {cell!r}: port {port} on {host} is not available "
            f"({exc.strerror}); choose another with --port or @cell(port=...)"
        ) from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


def url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
