"""The mesh: call another cell by name, as robustly as a service-mesh data plane would.

```
stub / raw client ─► Mesh.call ─► resolve (registry view, locality; none ready: wait for
  one, within the deadline) ─► outlier ejection ─► balancer ─► deadline header ─► transport
  ─► classify ─► retry (tenacity backoff, idempotent only — or any method when the callee
  refused the request unprocessed — within the retry budget and the deadline)
```

What the mesh keeps per instance is forgotten once the instance has left the registry view
(when a target next sees the view changed), and what it keeps per policy is bounded, so a
long-lived caller's memory does not grow with restarts, autoscaling or ad-hoc policies.

```python
async with Mesh(registry="local://") as mesh:
    greeter = mesh.client(Greeter)          # typed: mypy sees Greeter's methods
    greeting = await greeter.greet(name="Ada")
    orders = mesh.client("orders")          # raw: get/post/... on paths
    found = await orders.get("/orders", params={"limit": 5})
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from tenacity import RetryCallState

from ..errors import (
    CallError,
    CircuitOpenError,
    DeadlineExceeded,
    NoInstancesError,
    RetryBudgetExhausted,
    TransportError,
)
from ..registry import Instance, Registry, RegistryView, open_registry
from .clock import Clock, MonotonicClock
from .deadline import ATTEMPT_HEADER, CALLER_HEADER, DEADLINE_HEADER, current_deadline
from .outcomes import draining, remote_error, retry_after, retryable, unprocessed
from .policy import CallPolicy, Policies
from .raw import RawClient
from .target import Pick, Target
from .transports.base import CallRequest, CallResponse, Transport
from .transports.http import HttpTransport
from .transports.local import call_in_process
from .waiting import InstanceWaits, unprocessed_pause

if TYPE_CHECKING:
    from ..observability.client import MeshTelemetry
    from ..security.tls import CellTLS

__all__ = ["Fallback", "Mesh"]

T = TypeVar("T")
Fallback = Callable[..., Any]

_log = logging.getLogger("orchestro.mesh")
_ATTEMPTS = tuple(str(n) for n in range(10))  # attempt header values, made once
# Bounds on what is kept per policy: a Target per (cell, policy value), a stub per client()
# key. Code that makes a policy or a fallback per call would otherwise grow them forever.
MAX_TARGETS = 256
MAX_STUBS = 1024


class Mesh:
    """Calls to other cells (and to external HTTP services) for one process.

    Args:
        registry: a :class:`~orchestro.registry.Registry`, a :class:`RegistryView`, or a
            registry URL (default ``local://``).
        policy: the process's default :class:`CallPolicy` (default: from ``ORCHESTRO_MESH_*``).
        policies: per target cell overrides, or a whole :class:`Policies` (from the
            configuration file: per process, per cell, per operation).
        caller: the name of the calling cell (sent for logs; never trusted for access).
        zone: prefer instances with this ``zone`` label (after those on this host).
    """

    def __init__(
        self,
        registry: Registry | RegistryView | str | None = None,
        *,
        policy: CallPolicy | None = None,
        policies: Mapping[str, CallPolicy] | Policies | None = None,
        caller: str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        zone: str | None = None,
        telemetry: bool = True,
    ) -> None:
        if isinstance(registry, RegistryView):
            self.view = registry
            self._owns_view = False
        else:
            if registry is None or isinstance(registry, str):
                registry = open_registry(registry or "local://")
            self.view = RegistryView(registry)
            self._owns_view = True
        if isinstance(policies, Policies):
            self.policies = policies
        else:
            self.policies = Policies(policy, dict(policies or {}))
        if policy is not None:
            self.policies.default = policy
        self._caller = caller
        self.transport: Transport = transport or HttpTransport(
            connect_timeout=self.policies.default.connect_timeout
        )
        self._clock = clock or MonotonicClock()
        # Read several times on every call: the real clock's function itself, not a method.
        self._now = time.monotonic if type(self._clock) is MonotonicClock else self._clock.now
        self._view_loaded = False
        self._hostname = socket.gethostname()
        self._zone = zone
        # Targets by (cell, policy value); and an index by the policy object's identity
        # (hashing a pydantic model costs microseconds a call), which keeps the policy object
        # so that its id cannot be reused while indexed. Each call stamps its target with a
        # use count (not move_to_end: that would hash the policy on every call), and the cap
        # drops the least recently used one: the hottest target is usually the oldest.
        self._by_policy: dict[tuple[str, CallPolicy], Target] = {}
        self._targets: dict[tuple[str, int], tuple[CallPolicy, Target]] = {}
        self._uses = 0
        self._waits = InstanceWaits(self.view, self._now)
        self._external: dict[str, tuple[Instance, ...]] = {}
        self._stubs: dict[Any, Any] = {}
        self._local: dict[str, list[Any]] = {}  # cell -> CellHosts serving in this process
        self._local_turn = 0
        self._telemetry_on = telemetry
        self._obs: MeshTelemetry | None = None
        self._parent: Mesh | None = None
        self._bound: dict[str, Mesh] = {}  # caller cell -> its binding (see bind)

    @property
    def caller(self) -> str | None:
        """The calling cell this mesh speaks for (``None``: not a cell)."""
        return self._caller

    def bind(self, caller: str, tls: CellTLS | None = None) -> Mesh:
        """This mesh, calling as cell ``caller``: the same registry view, policies and
        in-process cells, its own connections, which present ``tls``'s client certificate
        to the callee's mesh listener (``None``: plain calls to public ports). One binding
        per caller; closing this mesh closes them. A process hosting several cells binds
        one per cell, so each call proves the cell that makes it."""
        root = self._parent or self
        bound = root._bound.get(caller)
        if bound is not None:
            return bound
        bound = Mesh(
            root.view,
            policies=root.policies,
            caller=caller,
            transport=(
                HttpTransport(tls=tls, connect_timeout=root.policies.default.connect_timeout)
                if tls is not None
                else root.transport
            ),
            clock=root._clock,
            zone=root._zone,
            telemetry=root._telemetry_on,
        )
        bound._parent = root
        bound._local = root._local  # cells in this process, shared: attach() goes to the root
        bound._external = root._external
        root._bound[caller] = bound
        return bound

    def _observe(self) -> MeshTelemetry | None:
        """The mesh's telemetry, made on first use (after the process set its telemetry up)."""
        if not self._telemetry_on:
            return None
        from ..observability.client import MeshTelemetry
        from ..observability.telemetry import get_telemetry

        parent = self._parent
        if parent is not None and parent._obs is None:
            parent._observe()  # the registry's counts are the root's: once per process
        obs = self._obs = MeshTelemetry(get_telemetry(), self._caller)
        counts = self._registry_counts if parent is None else _no_counts
        obs.observe(self, self._breaker_states, counts)
        return obs

    def _breaker_states(self) -> list[tuple[str, str, str]]:
        found = {}
        for (cell, _), target in list(self._by_policy.items()):
            for iid in target.ids:
                found[cell, iid] = target.detector.state(iid)
        return [(cell, iid, state) for (cell, iid), state in found.items()]

    def _registry_counts(self) -> list[tuple[dict[str, str], float]]:
        if not self.view.loaded:
            return []
        counts: dict[tuple[str, str], int] = {}
        for cell, instances in self.view.cells().items():
            for i in instances:
                counts[cell, str(i.state)] = counts.get((cell, str(i.state)), 0) + 1
        return [
            ({"orchestro.registry.cell": cell, "orchestro.instance.state": state}, n)
            for (cell, state), n in counts.items()
        ]

    async def start(self) -> None:
        await self.view.start()

    async def aclose(self) -> None:
        if self._obs is not None:
            self._obs.forget(self)
        bound, self._bound = list(self._bound.values()), {}
        for child in bound:
            await child.aclose()
        if self._parent is not None:
            self._parent._bound.pop(self._caller or "", None)
            if self.transport is not self._parent.transport:
                await self.transport.aclose()
            return
        if self._owns_view:
            await self.view.aclose()
            await self.view.registry.aclose()
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @overload
    def client(
        self,
        target: type[T],
        *,
        policy: CallPolicy | None = None,
        fallback: Mapping[str, Fallback] | None = None,
    ) -> T: ...

    @overload
    def client(
        self,
        target: str,
        *,
        policy: CallPolicy | None = None,
        fallback: Mapping[str, Fallback] | None = None,
    ) -> RawClient: ...

    def client(
        self,
        target: Any,
        *,
        policy: CallPolicy | None = None,
        fallback: Mapping[str, Fallback] | None = None,
    ) -> Any:
        """A typed stub for a ``@cell`` class, or a raw client for a cell name or base URL.

        ``fallback`` maps a service's name to a function called with the final
        :class:`~orchestro.errors.CallError` and the call's arguments when the call fails;
        what it returns (or awaits to) is the call's result.
        """
        key = (target, policy, tuple(sorted((fallback or {}).items())))
        stub = self._stubs.get(key)
        if stub is None:
            from .stub import build_stub

            if isinstance(target, str):
                stub = RawClient(self, self._name_of(target), policy)
            else:
                stub = build_stub(self, target, policy, dict(fallback or {}))
            if len(self._stubs) >= MAX_STUBS:
                del self._stubs[next(iter(self._stubs))]  # the oldest: made again if used
            self._stubs[key] = stub
        return stub

    def _name_of(self, target: str) -> str:
        """A cell name, or for a URL a synthetic cell holding that one address."""
        if "://" not in target:
            return target
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"mesh.client({target!r}): use a cell name or an http(s) URL")
        name = target.rstrip("/")
        if name not in self._external:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._external[name] = (
                Instance(
                    cell=parts.hostname[:63],
                    id=name,
                    scheme=parts.scheme,
                    host=parts.hostname,
                    port=port,
                ),
            )
        return name

    def attach(self, host: Any) -> None:
        """A cell host of this process is serving: typed calls to its cell go to it directly
        (checked by its access rules with the calling cell's identity)."""
        self._local.setdefault(host.name, []).append(host)

    def detach(self, host: Any) -> None:
        hosts = self._local.get(host.name, [])
        if host in hosts:
            hosts.remove(host)

    def local_host(self, cell: str) -> Any:
        """A serving host of ``cell`` in this process, or None."""
        hosts = self._local.get(cell)
        if not hosts:
            return None
        self._local_turn += 1
        host = hosts[self._local_turn % len(hosts)]
        return host if host.gate.is_open else None

    def call_local(
        self,
        cell: str,
        host: Any,
        operation: str,
        arguments: dict[str, Any],
        seconds: float,
        decode: Callable[[Any], Any] | None = None,
        method: str = "POST",
    ) -> Awaitable[Any]:
        """Call a service of a cell hosted in this process (see :mod:`.transports.local`):
        returns that call's coroutine, adding no coroutine layer of its own."""
        deadline = current_deadline()
        if deadline is not None:
            seconds = min(seconds, deadline - self._now())
        obs = self._obs if self._obs is not None else self._observe()
        return call_in_process(
            cell, host, operation, arguments, seconds, decode, obs, method, self._caller
        )

    def policy_for(self, cell: str, operation: str | None = None) -> CallPolicy:
        if operation is None:
            return self.policies.for_cell(cell)
        return self.policies.for_operation(cell, operation)

    def _target(self, cell: str, policy: CallPolicy) -> Target:
        """The state (statistics, ejections, budget) for calls to ``cell`` under ``policy``:
        one per cell and policy *value* (equal policies share it), at most MAX_TARGETS: the
        least recently used is dropped, and made again from scratch if it is needed later."""
        by_value = (cell, policy)
        target = self._by_policy.get(by_value)
        if target is None:
            if len(self._by_policy) >= MAX_TARGETS:
                stale = min(self._by_policy, key=lambda key: self._by_policy[key].used)
                del self._by_policy[stale]
                self._targets.clear()  # may index the one dropped; rebuilt on use
            target = self._by_policy[by_value] = Target(policy, self._clock)
            obs = self._obs if self._obs is not None else self._observe()
            if obs is not None:
                obs.new_target(cell, target.detector)
        if len(self._targets) >= 4 * MAX_TARGETS:
            self._targets.clear()  # policy objects made per call: rebuilt on use
        self._targets[cell, id(policy)] = (policy, target)
        return target

    def target_state(self, cell: str) -> Target | None:
        """The state kept for calls to ``cell`` under its cell-level policy (for tests)."""
        return self._by_policy.get((cell, self.policy_for(cell)))

    def retained(self) -> dict[str, int]:
        """How much per-instance and per-policy state this mesh holds (tests and leak hunts
        read it): entries, not bytes."""
        targets = list(self._by_policy.values())
        return {
            "targets": len(self._by_policy),
            "target_index": len(self._targets),
            "stubs": len(self._stubs),
            "stats": sum(len(t.stats) for t in targets),
            "health": sum(t.detector.tracked() for t in targets),
            "indexed": sum(len(t.by_id) for t in targets),
        }

    def resolve(self, cell: str) -> tuple[Instance, ...]:
        """Ready instances of ``cell``, those on this host first, then this zone."""
        return self._nearest(self._external.get(cell) or self.view.ready(cell))

    def _nearest(self, found: tuple[Instance, ...]) -> tuple[Instance, ...]:
        """Of ``found``, those on this host if any, else those in this zone if any."""
        if len(found) > 1:
            here = tuple(i for i in found if i.hostname == self._hostname)
            if here:
                return here
            if self._zone is not None:
                zone = tuple(i for i in found if i.labels.get("zone") == self._zone)
                if zone:
                    return zone
        return found

    @overload
    async def call(
        self, cell: str, request: CallRequest, policy: CallPolicy | None = None
    ) -> CallResponse: ...

    @overload
    async def call(
        self,
        cell: str,
        request: CallRequest,
        policy: CallPolicy | None,
        decode: Callable[[CallResponse], T],
    ) -> T: ...

    async def call(
        self,
        cell: str,
        request: CallRequest,
        policy: CallPolicy | None = None,
        decode: Callable[[CallResponse], Any] | None = None,
    ) -> Any:
        """Send ``request`` to an instance of ``cell`` under the resilience pipeline; the
        answer, or ``decode(answer)``."""
        # The hot path of every remote call: one coroutine for the whole call, attempts
        # inline, one clock read before the first attempt and one after each. Each coroutine
        # layer, object and call here costs on every call, and the client-side benchmark
        # (bench/mesh.py) sees it.
        if policy is None:
            policy = self.policy_for(cell)
        indexed = self._targets.get((cell, id(policy)))
        if indexed is not None and indexed[0] is policy:
            target = indexed[1]
        else:
            target = self._target(cell, policy)
        self._uses += 1
        target.used = self._uses
        obs = self._obs if self._obs is not None else self._observe()
        traced = None
        if obs is not None and obs.records():
            traced = obs.start_call(cell, request.operation or f"{request.method} {request.path}")
        try:
            now = self._now()
            deadline = now + policy.timeout
            inherited = current_deadline()
            if inherited is not None and inherited < deadline:
                deadline = inherited
            target.budget.record_request(now)
            if not self._view_loaded and cell not in self._external:
                if not self.view.loaded:
                    # Just started: wait (within the deadline) for the registry's first
                    # snapshot.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, deadline - self._now())):
                            await self.view.wait_ready()
                    now = self._now()
                self._view_loaded = self.view.loaded  # once loaded, a view stays loaded
            attempt = 1  # requests sent (the attempt header)
            counted = 1  # attempts that count against max_attempts
            resends = 0  # resends of requests refused unprocessed
            waited_until: float | None = None  # the bound on waiting for an instance
            wait_began = 0.0
            tried: list[str] = []
            while True:
                try:
                    if attempt == 1 and policy.hedge and request.idempotent:
                        response = await self._hedged(cell, target, request, deadline, tried)
                        break
                    pick = self._choose(
                        cell,
                        target,
                        request,
                        deadline,
                        attempt,
                        tried,
                        now,
                        counted < policy.max_attempts,
                    )
                    pick.stats.in_flight += 1
                    try:
                        sent = await self.transport.send(
                            pick.instance, pick.request, pick.remaining, pick.headers
                        )
                    except BaseException as exc:
                        if pick.capped and isinstance(exc, DeadlineExceeded):
                            abandoned = _abandoned(cell, pick)
                            self._failed(cell, target, pick, abandoned)
                            raise abandoned from None
                        self._failed(cell, target, pick, exc)
                        raise
                    response = self._answered(cell, target, pick, sent)
                    break
                except NoInstancesError:
                    # Restarting, or not started yet: wait (within the deadline, for at most
                    # wait_for_instances in all) for an instance to appear.
                    if waited_until is None:
                        wait_began = self._now()
                        waited_until = min(deadline, wait_began + policy.wait_for_instances)
                    # None listed at all: any that appears is worth trying, one marked
                    # draining too (a pod restarted in place keeps its id).
                    if not await self._waits.wait(cell, waited_until, obs):
                        raise self._none_found(cell, policy, wait_began) from None
                    now = self._now()
                except CallError as exc:
                    refused = unprocessed(exc)
                    gone = draining(exc) if refused else None
                    if gone is not None:
                        # Ahead of the view: stop choosing it (for a while; see DRAINING_MARK).
                        target.mark_draining(gone, self._now())
                    if not refused and (
                        counted >= policy.max_attempts or not retryable(exc, request)
                    ):
                        raise
                    if not target.budget.try_spend():
                        if obs is not None:
                            obs.count(obs.budget_refusals, cell)
                        raise RetryBudgetExhausted(
                            f"call to {cell!r} failed ({exc}) and the retry budget is spent",
                            cell=cell,
                        ) from exc
                    if refused:
                        resends += 1
                        pause = unprocessed_pause(
                            resends, policy.backoff_base, policy.unprocessed_backoff_max
                        )
                    else:
                        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
                        state.attempt_number = counted
                        pause = target.wait(state)
                    if gone is None and not self._elsewhere(cell, target, tried):
                        # Retry-After is the instance's own: a retry that goes to another,
                        # ready instance does not sleep it (nor one that waits for a new
                        # instance, the first being gone).
                        pause = max(pause, retry_after(exc))
                    if self._now() + pause >= deadline:
                        raise DeadlineExceeded(
                            f"call to {cell!r} failed ({exc}) and its deadline leaves no time "
                            "to retry",
                            cell=cell,
                        ) from exc
                    await asyncio.sleep(pause)
                    attempt += 1
                    if not refused:
                        counted += 1
                    now = self._now()
                    if obs is not None:
                        obs.count(obs.retries, cell)
        except BaseException as exc:
            if traced is not None:
                obs.end_call(traced, exc)  # type: ignore[union-attr]
            raise
        if traced is not None:
            obs.end_call(traced, None)  # type: ignore[union-attr]
        return response if decode is None else decode(response)

    def _none_found(self, cell: str, policy: CallPolicy, started: float) -> NoInstancesError:
        """What a call that found no instance of ``cell`` tells a person: where it looked,
        how long it waited, and what to check."""
        waited = self._now() - started
        where = (
            f"in registry {self.view.registry.url}"
            if cell not in self._external
            else "among its URLs"
        )
        return NoInstancesError(
            f"no ready instance of cell {cell!r} {where} after waiting {waited:.1f} s "
            f"(wait_for_instances {policy.wait_for_instances:g} s); is it running, with the "
            "same registry? `python -m orchestro ls` lists the instances the registry knows",
            cell=cell,
        )

    def _elsewhere(self, cell: str, target: Target, tried: list[str]) -> bool:
        """Whether a retry now would go to a ready, available instance not tried yet."""
        fresh = [i.id for i in self._candidates(cell, target, self._now()) if i.id not in tried]
        return bool(fresh) and bool(target.detector.available(fresh))

    def _candidates(self, cell: str, target: Target, now: float) -> tuple[Instance, ...]:
        """The instances of ``cell`` a call may choose from: ready (or the URL's), not marked
        draining (unless all are), nearest first. Notes a change of the view on the way."""
        instances = self._external.get(cell) or self.view.ready(cell)
        if instances is not target.viewed:
            # The view changed (its tuples are replaced, never mutated): forget the instances
            # that left it (draining ones stay until they are gone).
            if target.viewed is not None and cell not in self._external:
                target.forget({i.id for i in self.view.instances(cell)})
            target.viewed = instances
        if target.draining:
            instances = target.skip_draining(instances, now)
        return self._nearest(instances)

    async def _hedged(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        tried: list[str],
    ) -> CallResponse:
        """The first attempt, and a backup to another instance if it is slow (from the budget)."""
        delay = target.hedge_delay()
        first = asyncio.ensure_future(self._attempt(cell, target, request, deadline, 1, tried))
        if delay is None:
            return await first
        done, _ = await asyncio.wait({first}, timeout=delay)
        if done:
            return await first
        obs = self._obs
        if not target.budget.try_spend():
            if obs is not None:
                obs.count(obs.budget_refusals, cell)
            return await first
        if obs is not None:
            obs.count(obs.hedges, cell)
        second = asyncio.ensure_future(self._attempt(cell, target, request, deadline, 2, tried))
        pending = {first, second}
        failure: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    error = finished.exception()
                    if error is None:
                        return finished.result()
                    failure = failure or error
        finally:
            for task in pending:
                task.cancel()
        assert failure is not None
        raise failure

    async def _attempt(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        attempt: int,
        tried: list[str],
    ) -> CallResponse:
        """One attempt: choose an instance, send, record the outcome, classify the answer."""
        pick = self._choose(
            cell,
            target,
            request,
            deadline,
            attempt,
            tried,
            self._now(),
            attempt < target.policy.max_attempts,  # another attempt may follow
        )
        pick.stats.in_flight += 1
        try:
            response = await self.transport.send(
                pick.instance, pick.request, pick.remaining, pick.headers
            )
        except BaseException as exc:  # also cancelled: the caller gave up, or a hedge won
            if pick.capped and isinstance(exc, DeadlineExceeded):
                abandoned = _abandoned(cell, pick)
                self._failed(cell, target, pick, abandoned)
                raise abandoned from None
            self._failed(cell, target, pick, exc)
            raise
        return self._answered(cell, target, pick, response)

    def _choose(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        attempt: int,
        tried: list[str],
        now: float,
        retry_follows: bool = True,
    ) -> Pick:
        """Resolve, skip ejected instances, balance, and stamp the deadline: no I/O.
        ``retry_follows``: another attempt may follow this one (the last attempt is never
        abandoned: nothing would follow, and a slow answer is better than none)."""
        instances = self._candidates(cell, target, now)
        if not instances:
            raise NoInstancesError(f"no ready instance of cell {cell!r}", cell=cell)
        if instances is not target.seen:
            # Index the instances to choose from once.
            target.seen = instances
            target.by_id = {i.id: i for i in instances}
            target.ids = list(target.by_id)
            target.all_stats = [target.stat(i) for i in target.ids]
        ids = target.ids
        available = target.detector.available(ids)
        if not available:
            raise CircuitOpenError(
                f"every instance of cell {cell!r} is ejected after failing", cell=cell
            )
        if tried:
            # A retry goes to another instance when there is one (Envoy's previous_hosts): a
            # fast-failing instance looks cheap to a latency-based balancer.
            fresh = [i for i in available if i not in tried]
            available = fresh or available
        remaining = deadline - now
        if remaining <= 0:
            raise DeadlineExceeded(f"the deadline of the call to {cell!r} passed", cell=cell)
        capped = False
        if request.idempotent and retry_follows:
            # An attempt that outlives its timeout is abandoned and retried on another
            # instance within the call's deadline (a black-holed instance never answers).
            # The callee is told the attempt's deadline, not the call's (as Envoy does with
            # its per-try timeout): its work past that point is wasted.
            cap = target.attempt_timeout(request)
            if cap is not None and cap < remaining:
                remaining, capped = cap, True
        if available is ids:
            candidates = target.all_stats
            chosen = (
                candidates[0]
                if len(candidates) == 1
                else target.balancer.pick(candidates, request.key, now)
            )
        else:
            chosen = target.balancer.pick([target.stat(i) for i in available], request.key, now)
        tried.append(chosen.id)
        target.detector.on_pick(chosen.id)
        # The request's own headers, then the mesh's (which win).
        headers = {
            **request.headers,
            DEADLINE_HEADER: str(int(remaining * 1000)),
            ATTEMPT_HEADER: _ATTEMPTS[attempt] if attempt < 10 else str(attempt),
        }
        if self._caller:
            headers[CALLER_HEADER] = self._caller
        instance = target.by_id[chosen.id]
        pick = Pick(chosen, instance, request, headers, now, remaining, ids, capped)
        obs = self._obs
        if obs is not None:
            pick.span = obs.start_attempt(
                cell, request.method, instance, request.path, attempt, headers
            )
        return pick

    def _failed(self, cell: str, target: Target, pick: Pick, error: BaseException) -> None:
        """An attempt raised (could not connect, timed out, was cancelled)."""
        pick.stats.in_flight -= 1
        end = pick.ended = self._now()
        if not isinstance(error, TransportError):
            # No answer is no latency: an attempt abandoned at its timeout, or a connect
            # into a partition, is a failure for the outlier detector (which ejects, and
            # probes back), not a cost for the balancer. Taken as latency, its second-long
            # peak kept a host that was never ejected out of p2c's choice for ~50 s after
            # it recovered (the peak decays over 10 s time constants).
            pick.stats.observe(end - pick.started, end)
        result = type(error).__name__
        if isinstance(error, CallError):
            target.detector.record(pick.stats.id, False, pick.ids, end)
            error.cell = cell
        obs = self._obs
        if obs is not None:
            obs.record(cell, pick.request.method, result, end - pick.started)
            if pick.span is not None:
                obs.end_attempt(pick.span, result)

    def _answered(
        self, cell: str, target: Target, pick: Pick, response: CallResponse
    ) -> CallResponse:
        """An attempt got an answer: load statistics, failure accounting, telemetry; raise
        the remote error for a 4xx or 5xx."""
        stats = pick.stats
        stats.in_flight -= 1
        end = pick.ended = self._now()
        took = end - pick.started
        stats.observe(took, end)
        status = response.status
        target.detector.record(stats.id, status < 500, pick.ids, end)
        obs = self._obs
        if obs is not None:
            obs.record(cell, pick.request.method, status, took)
            if pick.span is not None:
                obs.end_attempt(pick.span, status)
        if status < 400:
            target.latencies.append(took)
            target.timer(pick.request).observe(took)
            return response
        if status < 500:
            target.latencies.append(took)
            target.timer(pick.request).observe(took)
        error = remote_error(cell, pick.instance, response)
        if pick.capped and isinstance(error, DeadlineExceeded):
            # The callee stopped at the attempt's deadline, not the call's: retryable.
            error = _abandoned(cell, pick)
        raise error


def _abandoned(cell: str, pick: Pick) -> TransportError:
    """The error of an attempt that outlived its attempt timeout (not the call's deadline):
    a transport failure, so an idempotent call is retried on another instance, and the
    instance's outlier detector counts it (Envoy's local-origin failures)."""
    return TransportError(
        f"cell {cell!r} ({pick.instance.url}) did not answer within the attempt timeout "
        f"of {pick.remaining:.3f} s",
        cell=cell,
    )


def _no_counts() -> list[tuple[dict[str, str], float]]:
    return []
