"""The mesh: call another cell by name, as robustly as a service-mesh data plane would.

A :class:`Mesh` composes its concerns, each in its own module: resolution and URL targets
(:mod:`.resolver`), the state kept per target (:mod:`.target`), the cells of this process
(:mod:`.local_cells`, called in process by :mod:`.transports.local`), the resilience
pipeline of a remote call (:mod:`.pipeline`: balancing, ejection, retries, hedging), typed
stubs and raw clients (:mod:`.stub`, :mod:`.raw`) and its telemetry (:mod:`.telemetry`).

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

import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from ..deadline import current_deadline
from ..registry import Instance, Registry, RegistryView, open_registry
from .clock import Clock, MonotonicClock
from .local_cells import LocalCells
from .pipeline import CallPipeline
from .policy import CallPolicy, Policies
from .raw import RawClient
from .resolver import Resolver
from .stub import build_stub
from .target import MAX_TARGETS, Target, TargetTable
from .transports.base import Transport, with_tls
from .transports.http import HttpTransport
from .transports.local import call_in_process
from .waiting import InstanceWaits

if TYPE_CHECKING:
    from ..security.tls import CellTLS
    from .telemetry import MeshTelemetry

__all__ = ["MAX_STUBS", "MAX_TARGETS", "Fallback", "Mesh"]

T = TypeVar("T")
Fallback = Callable[..., Any]

# A stub per client() key, at most: code that makes a policy or a fallback per call would
# otherwise grow the cache forever.
MAX_STUBS = 1024


class Mesh(CallPipeline):
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
        self.transport = transport or HttpTransport(
            connect_timeout=self.policies.default.connect_timeout
        )
        self._clock = clock or MonotonicClock()
        # Read several times on every call: the real clock's function itself, not a method.
        self._now = time.monotonic if type(self._clock) is MonotonicClock else self._clock.now
        self._view_loaded = False
        self._zone = zone
        self._resolver = Resolver(self.view, zone)
        self._targets = TargetTable(self._clock, self._new_target)
        self._waits = InstanceWaits(self.view, self._now)
        self._stubs: dict[Any, Any] = {}
        self._local = LocalCells()
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
        to the callee's mesh listener (``None``: plain calls to public ports). A transport
        given to the root is kept: its ``with_tls(tls)`` makes the binding's (the test
        kit's transports keep injecting their faults). One binding
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
            transport=root.transport if tls is None else with_tls(root.transport, tls),
            clock=root._clock,
            zone=root._zone,
            telemetry=root._telemetry_on,
        )
        bound._parent = root
        # Shared with the root: attach() goes to the root, URL targets are named once.
        bound._local = root._local
        bound._resolver = root._resolver
        root._bound[caller] = bound
        return bound

    def _observe(self) -> MeshTelemetry | None:
        """The mesh's telemetry, made on first use (after the process set its telemetry up)."""
        if not self._telemetry_on:
            return None
        from ..observability.telemetry import get_telemetry
        from .telemetry import MeshTelemetry, no_counts, registry_counts

        parent = self._parent
        if parent is not None and parent._obs is None:
            parent._observe()  # the registry's counts are the root's: once per process
        obs = self._obs = MeshTelemetry(get_telemetry(), self._caller)
        view = self.view
        counts = (lambda: registry_counts(view)) if parent is None else no_counts
        obs.observe(self, self._targets.breaker_states, counts)
        return obs

    def _new_target(self, cell: str, target: Target) -> None:
        obs = self._obs if self._obs is not None else self._observe()
        if obs is not None:
            obs.new_target(cell, target.detector)

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
            if isinstance(target, str):
                stub = RawClient(self, self._resolver.name_of(target), policy)
            else:
                stub = build_stub(self, target, policy, dict(fallback or {}))
            if len(self._stubs) >= MAX_STUBS:
                del self._stubs[next(iter(self._stubs))]  # the oldest: made again if used
            self._stubs[key] = stub
        return stub

    def attach(self, host: Any) -> None:
        """A cell host of this process is serving: typed calls to its cell go to it directly
        (checked by its access rules with the calling cell's identity)."""
        self._local.attach(host)

    def detach(self, host: Any) -> None:
        self._local.detach(host)

    def local_host(self, cell: str) -> Any:
        """A serving host of ``cell`` in this process, or None."""
        return self._local.host(cell)

    def call_local(
        self,
        cell: str,
        host: Any,
        operation: str,
        arguments: dict[str, Any],
        seconds: float,
        decode: Callable[[Any], Any] | None = None,
        method: str = "POST",
        policy: CallPolicy | None = None,
        elsewhere: Callable[[Mapping[str, Any]], Awaitable[Any]] | None = None,
        bound: Mapping[str, Any] | None = None,
    ) -> Awaitable[Any]:
        """Call a service of a cell hosted in this process (see :mod:`.transports.local`):
        returns that call's coroutine, adding no coroutine layer of its own. Resends at the
        host's ``max_concurrency`` are paid from the retry budget of ``policy`` (default:
        the cell's); if the host stops admitting (it drains) before the call is let in,
        ``elsewhere(bound)`` makes the same call through the remote pipeline, to another
        instance."""
        deadline = current_deadline()
        if deadline is not None:
            seconds = min(seconds, deadline - self._now())
        obs = self._obs if self._obs is not None else self._observe()
        return call_in_process(
            cell,
            host,
            operation,
            arguments,
            seconds,
            decode,
            obs,
            method,
            self._caller,
            self._resend_local,
            policy,
            elsewhere,
            bound,
        )

    def _resend_local(self, cell: str, policy: CallPolicy | None) -> bool:
        """Whether the retry budget of ``cell`` under ``policy`` pays for resending an
        in-process call its host refused at its ``max_concurrency`` (as over HTTP, for a 503
        unprocessed)."""
        target = self._targets.get(cell, policy or self.policy_for(cell))
        if target.budget.try_spend():
            return True
        obs = self._obs
        if obs is not None:
            obs.count(obs.budget_refusals, cell)
        return False

    def target_state(self, cell: str) -> Target | None:
        """The state kept for calls to ``cell`` under its cell-level policy (for tests)."""
        return self._targets.find(cell, self.policy_for(cell))

    def retained(self) -> dict[str, int]:
        """How much per-instance and per-policy state this mesh holds (tests and leak hunts
        read it): entries, not bytes."""
        return {**self._targets.retained(), "stubs": len(self._stubs)}

    def resolve(self, cell: str) -> tuple[Instance, ...]:
        """Ready instances of ``cell``, those on this host first, then this zone."""
        return self._resolver.resolve(cell)
