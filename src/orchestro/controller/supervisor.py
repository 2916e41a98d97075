"""The cell controller: run, watch, restart and scale each cell's replica processes.

Supervision is one reconcile loop (signal handlers and the admin API only change what is
*desired*): every 100 ms it reaps replicas that exited, restarts crashed ones (at once the
first time, then with exponential back-off while they keep crashing), stops hung ones
(SIGTERM, then SIGKILL after a grace period), starts replicas up to the desired count and
drains the newest of those above it. A draining replica that outlives the drain timeout plus
``KILL_MARGIN`` gets SIGKILL: the controller escalates itself, under one deadline.

Each replica runs in a process group (a session) of its own: a Ctrl-C or a SIGHUP from the
terminal reaches the controller only, and only the controller signals replicas (SIGTERM:
drain; SIGINT to a draining replica: exit at once, deregistering first). The replicas'
output and the controller's own lines go through an :class:`.relay.OutputRelay`, which never
blocks the loop. Every background task (the pinger, each spawn and output reader) belongs
to a :class:`~orchestro.background.Background`.

A pinger asks each replica ``/healthz?load`` every half second: health is "answers in
time", and the answer is also the replica's load report, which the scaler (:mod:`.scaler`)
turns into the desired count every tick.

Sockets: the controller binds each cell's public port once and every replica inherits that
listening socket; each replica also listens on a private port of its own, which it
registers, so that mesh callers balance over replicas individually. A draining replica
closes only its copy of the shared socket: the connections queued on it stay for the other
replicas (closing one of several ``SO_REUSEPORT`` sockets would reset them instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from ..background import Background, exponential
from ..cell.scaling import Scaling
from ..cell.spec import CellSpec
from ..errors import ConfigurationError, DiscoveryError
from ..registry.base import Registry
from .events import EventLog
from .metrics import instrument
from .relay import OutputRelay
from .replicas import CellGroup, Replica, SupervisorSettings, listen, url_host
from .scaler import Scaler

__all__ = ["CellGroup", "Replica", "Supervisor", "SupervisorSettings"]

_log = logging.getLogger("orchestro.controller")
_SERVING = re.compile(r"cell (\S+) serving on (http://\S+)")

# A replica told to drain exits within its drain timeout; this much more (interpreter
# teardown, a loaded machine) and the controller kills it.
KILL_MARGIN = 3.0
# A forced stop (a second Ctrl-C): replicas get this long to deregister and exit.
FORCE_GRACE = 2.0
# Removing a dead replica's records from the registry takes at most this long.
_FORGET_BOUND = 2.0


class Supervisor:
    """Runs the replicas of ``cells`` (see the module's docstring)."""

    def __init__(
        self,
        cells: Sequence[
            tuple[CellSpec, Scaling, int, bool] | tuple[CellSpec, Scaling, int, bool, Scaling]
        ],
        command: Callable[[CellSpec, int], list[str]],
        *,
        host: str,
        settings: SupervisorSettings | None = None,
        events: EventLog | None = None,
        say: Callable[[str], None] | None = None,
        reload: Callable[[], dict[str, Scaling]] | None = None,
        output: OutputRelay | None = None,
        registry: Callable[[], Registry] | None = None,
        manual_max: int = 256,
    ) -> None:
        """``cells``: (spec, scaling, initial replicas, auto-scaled[, declared scaling]);
        ``reload`` returns each cell's declared scaling: an auto-scaled one replaces the
        scaler, a fixed count (``min == max``) becomes the desired count when the file changed
        it (``orchestro scale`` may set 1..``manual_max`` in between); ``command(spec, fd)`` is the
        argument list of one replica serving ``spec`` on the inherited socket ``fd``;
        ``output`` relays the replicas' lines (and ``say``'s, when the caller routes them);
        ``registry`` opens the replicas' registry, from which the controller removes the
        records of a replica that did not exit cleanly (killed, crashed)."""
        self.settings = settings or SupervisorSettings()
        self.events = events or EventLog()
        self._command = command
        self.output = output or OutputRelay()
        self._say = say or (lambda line: self.output.line(f"orchestro: {line}"))
        self._tasks = Background("controller")
        self._forced = False
        self._open_registry = registry
        self._registry: Registry | None = None
        self._forgetting: set[asyncio.Task[None]] = set()
        self.groups: dict[str, CellGroup] = {}
        self._host = host
        self._cells = cells
        self._stopping = False
        self._reload = reload
        self._manual_max = manual_max
        self._declared: dict[str, Scaling] = {}  # each cell's scaling as its file last said
        self._reload_requested = False
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        from . import event_hooks

        for hook in event_hooks():
            self.events.hooks.append(functools.partial(_call_hook, hook, self))
        instrument(self, self.groups, self.events)

    # The desired state: the only thing signals, the admin API and hooks change -----------

    def scale(self, cell: str, replicas: int) -> None:
        group = self.groups.get(cell)
        if group is None:
            raise ConfigurationError(
                f"no cell {cell!r} here; the cells are {', '.join(sorted(self.groups))}"
            )
        low, high = group.scaling.min, group.scaling.max
        if not low <= replicas <= high:
            raise ConfigurationError(
                f"cell {cell!r} scales between {low} and {high} replicas (Scaling(min=, max=)); "
                f"{replicas} is out of bounds"
            )
        if replicas != group.desired:
            self.events.emit(
                "scaled",
                cell,
                detail=f"{group.desired} -> {replicas} (requested)",
                previous=group.desired,
                desired=replicas,
                source="manual",
            )
            group.desired = replicas
        self._wake.set()

    def restart(self, cell: str, index: int) -> None:
        """Drain replica ``index`` of ``cell``; the loop starts a new one in its place."""
        group = self.groups[cell]
        for replica in group.replicas:
            if replica.index == index and replica.state not in ("draining", "hung"):
                self._drain(group, replica, "restart requested")
                self._wake.set()
                return
        raise ConfigurationError(f"cell {cell!r} has no running replica {index}")

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def force(self) -> None:
        """Stop now (a person's second Ctrl-C): SIGINT to every replica, which deregisters
        and exits at once; SIGKILL for any still there after ``FORCE_GRACE``."""
        self._stopping = self._forced = True
        now = time.monotonic()
        for group in self.groups.values():
            for replica in group.replicas:
                replica.state = "draining"
                replica.kill_at = min(replica.kill_at or now + FORCE_GRACE, now + FORCE_GRACE)
                self._force_stop(replica, now)  # a replica still spawning: once it exists
        self._wake.set()

    def _force_stop(self, replica: Replica, now: float) -> None:
        """Tell a replica to deregister and exit at once: SIGINT while draining; one never
        signalled gets SIGTERM then SIGINT (a replica forces on SIGINT after a first signal,
        in either order of delivery), as a SIGTERM alone would only drain it."""
        if replica.proc is None:
            return  # still spawning: ``_spawn`` signals it once it exists
        if replica.term_sent is None:
            replica.term_sent = now
            replica.signal(signal.SIGTERM)
        replica.signal(signal.SIGINT)

    def request_reload(self) -> None:
        """Re-read the configuration and roll every replica, one by one (SIGHUP)."""
        self._reload_requested = True
        self._wake.set()

    def _apply_reload(self) -> None:
        self._reload_requested = False
        scalings: dict[str, Scaling] = {}
        if self._reload is not None:
            try:
                scalings = self._reload()
            except Exception as exc:  # a bad file: say so, keep running as before
                for group in self.groups.values():
                    self.events.emit("reload-failed", group.name, detail=str(exc))
                return
        for group in self.groups.values():
            declared = scalings.get(group.name)
            if declared is not None and declared != self._declared.get(group.name):
                self._declared[group.name] = declared
                self._rescale(group, declared)
            group.to_roll = [r for r in group.replicas if r.state not in ("draining", "hung")]
            group.surge = None
            self.events.emit(
                "reloaded",
                group.name,
                detail=f"rolling restart of {len(group.to_roll)} replica(s)",
            )

    def _rescale(self, group: CellGroup, declared: Scaling) -> None:
        """Apply a cell's newly declared scaling: auto-scaled within its bounds, or the fixed
        count it now names."""
        if declared.autoscales:
            group.scaling = declared
            group.scaler = Scaler(declared)
            group.desired = max(declared.min, min(declared.max, group.desired))
        else:
            group.scaling = declared.model_copy(update={"min": 1, "max": self._manual_max})
            group.scaler = None
            group.desired = max(1, declared.min)

    # The loop -----------------------------------------------------------------------------

    async def run(self) -> int:
        for spec, scaling, replicas, autoscaled, *declared in self._cells:
            self._declared[spec.name] = declared[0] if declared else scaling
            sock = listen(self._host, spec.port, spec.name)
            group = CellGroup(spec, scaling, max(scaling.min, min(scaling.max, replicas)), sock)
            group.last_busy = time.monotonic()
            if autoscaled:
                group.scaler = Scaler(scaling)
            self.groups[spec.name] = group
            self._say(
                f"cell {spec.name} serving on http://{url_host(self._host)}:"
                f"{sock.getsockname()[1]} ({group.desired} replica"
                f"{'s' if group.desired != 1 else ''}"
                f"{f', auto-scaling {scaling.min}..{scaling.max}' if group.scaler else ''})"
            )
        self._tasks.start("pinger", self._ping_forever)
        try:
            while not self._stopping:
                if self._reload_requested:
                    self._apply_reload()
                self._reconcile()
                await self._pause()
            return await self._shutdown()
        finally:
            for group in self.groups.values():
                self._disarm(group)
            await self._tasks.aclose()
            if self._forgetting:  # records of replicas that did not deregister themselves
                await asyncio.wait(self._forgetting, timeout=_FORGET_BOUND * 2)
            for group in self.groups.values():
                group.sock.close()
            if self._registry is not None:
                with contextlib.suppress(Exception):
                    await self._registry.aclose()

    async def _pause(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                await self._wake.wait()

    def _reconcile(self) -> None:
        now = time.monotonic()
        s = self.settings
        for group in self.groups.values():
            for replica in list(group.replicas):
                code = replica.proc.returncode if replica.proc is not None else None
                if code is not None:
                    self._reap(group, replica, code, now)
                elif replica.kill_at is not None and now >= replica.kill_at:
                    if replica.proc is not None and not replica.killed:
                        replica.killed = True
                        waited = now - (replica.term_sent or now)
                        self.events.emit(
                            "killed",
                            group.name,
                            replica.index,
                            f"still running {waited:.1f} s after SIGTERM: SIGKILL",
                        )
                        replica.signal(signal.SIGKILL)
                elif replica.ready_since is not None and now - replica.ready_since >= (
                    s.healthy_period
                ):
                    group.crashes = 0
            if self._stopping:
                continue  # reap and escalate only: nothing starts, nothing more drains
            if group.scaler is not None and now - group.last_tick >= group.scaling.tick:
                self._autoscale(group, now)
            if group.to_roll:
                self._roll(group, now)
                continue
            serving = group.serving
            if group.desired == 0 and not serving and not group.activator:
                self._arm(group)
            if len(serving) < group.desired and now >= group.next_start:
                for _ in range(group.desired - len(serving)):
                    self._start(group, now)
            elif len(serving) > group.desired:
                # Drain the newest (starting ones first): the oldest are warm.
                surplus = sorted(serving, key=lambda r: (r.state == "ready", -r.started))
                for replica in surplus[: len(serving) - group.desired]:
                    self._drain(group, replica, "scale down")

    def _roll(self, group: CellGroup, now: float) -> None:
        """One step of a rolling restart: start a replacement, and once it is ready drain one
        old replica — capacity never drops below the desired count."""
        group.to_roll = [
            r for r in group.to_roll if r in group.replicas and r.state not in ("draining", "hung")
        ]
        if group.surge is not None and group.surge not in group.replicas:
            group.surge = None  # the replacement crashed: start another
        if not group.to_roll:
            group.surge = None
            return
        if group.surge is None:
            if now >= group.next_start:
                group.surge = self._start(group, now)
        elif group.surge.state == "ready":
            self._drain(group, group.to_roll.pop(0), "rolling restart")
            group.surge = None
            if not group.to_roll:
                self.events.emit("rolled", group.name, detail="every replica replaced")

    def _reap(self, group: CellGroup, replica: Replica, code: int, now: float) -> None:
        group.replicas.remove(replica)
        for task in replica.tasks:
            task.cancel()
        replica.exit_code = code
        if code != 0 and replica.pid is not None and self._open_registry is not None:
            # It may not have deregistered (killed, crashed): forget its records now rather
            # than leave callers a dead instance until its TTL.
            task = asyncio.create_task(self._forget(group.name, replica.pid))
            self._forgetting.add(task)  # owned here: awaited (bounded) before the exit
            task.add_done_callback(self._forgetting.discard)
        if replica.state == "draining" or self._stopping:
            self.events.emit("stopped", group.name, replica.index, f"exit code {code}")
            return
        group.crashes += 1
        # The first crash restarts at once; then base, doubling, up to the maximum.
        delay = exponential(
            group.crashes - 1, self.settings.backoff_base, self.settings.backoff_max
        )
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.events.emit(
            "crashed", group.name, replica.index, how, exit_code=code, crashes=group.crashes
        )
        group.next_start = now + delay
        if delay:
            self.events.emit(
                "restart-delayed",
                group.name,
                replica.index,
                f"{group.crashes} crashes in a row: next start in {delay:g} s",
                delay=delay,
            )

    def _start(self, group: CellGroup, now: float) -> Replica:
        replica = Replica(group.name, group.next_index, now)
        group.next_index += 1
        group.replicas.append(replica)  # counted at once: the loop will not start it twice
        name = f"{group.name}:{replica.index}"
        self._tasks.start(f"spawn {name}", lambda: self._spawn(group, replica))
        return replica

    async def _spawn(self, group: CellGroup, replica: Replica) -> None:
        fd = group.sock.fileno()
        try:
            proc = replica.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "orchestro",
                *self._command(group.spec, fd),
                stdout=asyncio.subprocess.PIPE,
                pass_fds=(fd,),
                # Its own process group: signals from the terminal reach the controller only.
                start_new_session=True,
                env={**os.environ, "ORCHESTRO_REPLICA": f"{group.name}:{replica.index}"},
            )
        except Exception as exc:  # cannot even start: a crash, with its back-off
            _log.error("could not start replica %s:%d", group.name, replica.index, exc_info=exc)
            if replica in group.replicas:
                self._reap(group, replica, 1, time.monotonic())
            self._wake.set()
            return
        name = f"{group.name}:{replica.index}"
        self._tasks.start(f"output {name}", lambda: self._read(group, replica))
        self.events.emit("started", group.name, replica.index, f"pid {proc.pid}", pid=proc.pid)
        if self._forced:
            self._force_stop(replica, time.monotonic())
        elif self._stopping or replica.state == "draining":
            self._terminate(replica)

    async def _read(self, group: CellGroup, replica: Replica) -> None:
        """The replica's stdout: its private URL when it serves; other lines relayed."""
        assert replica.proc is not None
        assert replica.proc.stdout is not None
        prefix = f"[{group.name}:{replica.index}] "
        async for raw in replica.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            match = _SERVING.search(line)
            if match and replica.url is None:
                replica.url = match.group(2)
                if self._session is not None and self._tasks.running("pinger"):
                    # Ready as soon as it answers, not next round.
                    await self._ping(self._session, group, replica)
                continue
            if line:
                self.output.line(prefix + line)
        await replica.proc.wait()
        self._wake.set()

    def _drain(self, group: CellGroup, replica: Replica, why: str) -> None:
        replica.state = "draining"  # a replica still spawning is stopped once it exists
        self.events.emit("draining", group.name, replica.index, why)
        self._terminate(replica)

    def _terminate(self, replica: Replica, grace: float | None = None) -> None:
        """SIGTERM now, SIGKILL (by the loop) if it is still there after ``grace`` (default:
        the drain timeout plus ``KILL_MARGIN``)."""
        if replica.proc is None:
            return  # still spawning: signalled once it exists
        now = time.monotonic()
        if replica.term_sent is None:
            replica.term_sent = now
            replica.signal(signal.SIGTERM)
        wait = self.settings.drain_timeout + KILL_MARGIN if grace is None else grace
        if replica.kill_at is None or now + wait < replica.kill_at:
            replica.kill_at = now + wait

    async def _forget(self, cell: str, pid: int) -> None:
        """Remove the registry records of replica process ``pid`` of ``cell`` (bounded; never
        raises: the TTL is the fallback)."""
        assert self._open_registry is not None
        try:
            async with asyncio.timeout(_FORGET_BOUND):
                if self._registry is None:
                    self._registry = self._open_registry()
                here = socket.gethostname()
                for instance in await self._registry.list():
                    if instance.cell == cell and instance.pid == pid and instance.hostname == here:
                        await self._registry.deregister(instance.id)
        except (DiscoveryError, TimeoutError, OSError) as exc:
            _log.warning("could not remove the records of %s pid %d: %s", cell, pid, exc)
        except Exception:
            _log.exception("could not remove the records of %s pid %d", cell, pid)

    # Health and load ----------------------------------------------------------------------

    async def _ping_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.ping_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while True:
                pings = [
                    self._ping(session, group, replica)
                    for group in self.groups.values()
                    for replica in group.replicas
                    if replica.url is not None and replica.state not in ("draining", "hung")
                ]
                await asyncio.gather(*pings, return_exceptions=True)
                await asyncio.sleep(self.settings.ping_interval)

    async def _ping(
        self, session: aiohttp.ClientSession, group: CellGroup, replica: Replica
    ) -> None:
        try:
            async with session.get(f"{replica.url}/healthz?load") as response:
                report = await response.json()
            ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError, ValueError):
            ok, report = False, {}
        if replica.state in ("draining", "hung"):
            return
        if ok:
            replica.failed_pings = 0
            replica.in_flight = int(report.get("in_flight", 0))
            replica.admitted = int(report.get("admitted", 0))
            replica.cpu = float(report.get("cpu", 0.0))
            p95 = report.get("p95")
            replica.p95 = float(p95) if isinstance(p95, int | float) else None
            if report.get("ready") and replica.state != "ready":
                previous = replica.state
                replica.state = "ready"
                replica.ready_since = time.monotonic()
                kind = "ready" if previous == "starting" else "health-changed"
                self.events.emit(
                    kind,
                    group.name,
                    replica.index,
                    f"serving on {replica.url}" if kind == "ready" else "healthy",
                )
            return
        replica.failed_pings += 1
        if replica.state == "ready" and replica.failed_pings == 1:
            replica.state = "unhealthy"
            replica.ready_since = None
            self.events.emit("health-changed", group.name, replica.index, "missed a ping")
        if replica.failed_pings >= self.settings.hung_after and replica.ready_since is None:
            replica.state = "hung"
            self.events.emit(
                "hung",
                group.name,
                replica.index,
                f"no answer to {replica.failed_pings} pings: SIGTERM, SIGKILL in "
                f"{self.settings.kill_grace:g} s",
            )
            self._terminate(replica, self.settings.kill_grace)
            self._wake.set()

    # Scale to zero: the activator --------------------------------------------------------

    def _arm(self, group: CellGroup) -> None:
        """No replica: watch the shared socket. Nothing accepts, so a connection waits in the
        kernel's queue until a replica started for it accepts it: no proxy, nothing lost."""
        group.activator = True
        asyncio.get_running_loop().add_reader(group.sock.fileno(), self._activate, group)

    def _disarm(self, group: CellGroup) -> None:
        if group.activator:
            group.activator = False
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(group.sock.fileno())

    def _activate(self, group: CellGroup) -> None:
        self._disarm(group)
        if self._stopping:
            return
        wanted = max(1, group.scaling.min)
        self.events.emit(
            "scaled",
            group.name,
            detail=f"0 -> {wanted}: a connection is waiting (activator)",
            previous=0,
            desired=wanted,
            source="activator",
        )
        group.desired = wanted
        group.last_busy = time.monotonic()
        self._wake.set()

    def _autoscale(self, group: CellGroup, now: float) -> None:
        assert group.scaler is not None
        ready = sum(1 for r in group.replicas if r.state == "ready")
        previous_admitted = group.last_admitted
        if group.sample(now) is None or not ready:
            return
        if group.last_admitted != previous_admitted or any(r.in_flight for r in group.replicas):
            group.last_busy = now
        decision = group.scaler.decide(list(group.samples), ready, now, group.desired)
        if decision.desired == 0 and now - group.last_busy < group.scaling.stable_window:
            return  # to zero only after a whole stable window without a request
        if decision.desired != group.desired and not self._stopping:
            self.events.emit(
                "scaled",
                group.name,
                detail=f"{group.desired} -> {decision.desired}: {decision.reason}",
                previous=group.desired,
                desired=decision.desired,
                panicking=decision.panicking,
                source="autoscaler",
            )
            group.desired = decision.desired

    # Stopping -----------------------------------------------------------------------------

    async def _shutdown(self) -> int:
        """Drain every replica under one deadline; the loop kills what outlives it. The exit
        code: 130 when forced, 1 if a replica that was serving did not exit cleanly, else 0."""
        serving: set[int] = set()  # replicas that were serving: their exit code counts
        for group in self.groups.values():
            self.events.emit("stopping", group.name, detail="controller stopping")
            for replica in list(group.replicas):
                if replica.ready_since is not None:
                    serving.add(id(replica))
                if replica.state != "draining":
                    self._drain(group, replica, "controller stopping")
        exited: list[Replica] = []
        # Replicas still spawning are signalled once they exist; every signalled one is
        # killed by _reconcile at its deadline: this bound is a last resort only.
        bound = time.monotonic() + self.settings.drain_timeout + KILL_MARGIN + 10.0
        while time.monotonic() < bound:
            for group in self.groups.values():
                for replica in group.replicas:
                    if replica.proc is not None and replica.term_sent is None:
                        if self._forced:
                            self._force_stop(replica, time.monotonic())
                        else:
                            self._terminate(replica)
            before = {id(r): r for g in self.groups.values() for r in g.replicas}
            self._reconcile()
            after = {id(r) for g in self.groups.values() for r in g.replicas}
            exited += [r for key, r in before.items() if key not in after]
            if not after:
                break
            await self._pause()
        else:
            for group in self.groups.values():
                for replica in group.replicas:
                    replica.signal(signal.SIGKILL)
            return 130 if self._forced else 1
        if self._forced:
            return 130
        # A replica stopped while it was still starting may exit with any code: no failure.
        failed = [r for r in exited if r.exit_code and id(r) in serving]
        return 1 if failed else 0


def _call_hook(hook: Callable[[Any, Any], Any], actions: Supervisor, event: Any) -> None:
    hook(event, actions)
