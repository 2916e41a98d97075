"""The host of one cell: its instance, lifecycle hooks, gateway and state.

```python
async with CellHost(Greeter, port=0) as host:
    print(host.url)          # serving; on_start has run
# drained: listener closed, requests in flight finished, on_stop has run
```
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from ..cell.spec import CellSpec, ParamSource, spec_of
from ..config import AuthSettings, GatewaySettings, TelemetrySettings
from ..errors import StartupError
from ..gateway.access import AccessStep, Refusals, rule_of
from ..gateway.admission import Gate
from ..gateway.pipeline import Route
from ..gateway.telemetry import ServerTelemetry
from ..mesh import MESH_ATTR, Mesh
from ..observability.prometheus import metrics_handler
from ..observability.telemetry import get_telemetry
from ..registry.agent import Registration
from ..registry.base import Instance, InstanceState, new_instance_id
from ..registry.prometheus_sd import sd_handler
from ..security.boundary import CellSecurity
from ..security.identity import Caller, IdentityResolver, anonymous
from ..security.policy import AccessRule, PolicyMode
from .listeners import CellListeners
from .steps import Step, describe, each, now, this_machine

__all__ = ["CellHost", "CellState"]

_log = logging.getLogger("orchestro.cell")

# on_stop's share of the drain deadline, reserved when the cell has one: a quarter of it,
# at most this many seconds. Requests in flight get the rest.
ON_STOP_SHARE = 0.25
ON_STOP_SHARE_MAX = 5.0


class CellState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"  # listening; /healthz answers, /readyz and services answer 503
    SERVING = "serving"
    DRAINING = "draining"  # not listening; requests in flight finish
    STOPPED = "stopped"


class CellHost:
    """Runs one cell: creates it, starts its gateway, runs its hooks, drains it.

    ``cell`` is a ``@cell`` class (created with no arguments at start) or an instance of one
    (e.g. from :func:`orchestro.testing.make_cell`). A host starts once; ``drain`` is
    idempotent and a drained host cannot start again.
    """

    def __init__(
        self,
        cell: type[Any] | object,
        *,
        settings: GatewaySettings | None = None,
        host: str | None = None,
        port: int | None = None,
        identity: IdentityResolver = anonymous,
        registration: Registration | None = None,
        advertise_host: str | None = None,
        labels: Mapping[str, str] | None = None,
        mesh: Mesh | None = None,
        telemetry: TelemetrySettings | None = None,
        shared_socket: socket.socket | None = None,
        auth: AuthSettings | None = None,
        security: CellSecurity | None = None,
        mesh_port: int = 0,
        policy: PolicyMode = PolicyMode.ENFORCE,
        derived: Iterable[str] | None = None,
    ) -> None:
        self.spec: CellSpec = spec_of(cell)
        self._auth = auth  # how the gateway checks bearer tokens ([auth])
        self._registration = registration
        self._mesh = mesh
        self._advertise_host = advertise_host
        self._labels = dict(labels or {})
        self.instance_id = new_instance_id(self.spec.name)
        # Its lines carry its own cell and instance, not the process's first cell's.
        self._log = logging.LoggerAdapter(
            _log, {"cell": self.spec.name, "instance": self.instance_id}
        )
        self._instance: object | None = None if isinstance(cell, type) else cell
        self.settings = settings or GatewaySettings()
        self.host = host if host is not None else self.spec.host
        self.port = port if port is not None else self.spec.port
        self._telemetry_settings = telemetry or TelemetrySettings()
        self._telemetry: ServerTelemetry | None = None
        self.security = security
        self.mesh_port = mesh_port
        self.policy = policy
        self._derived = None if derived is None else frozenset(derived)
        self.refusals = Refusals(self.spec.name)
        # The rule of each service, for in-process callers (the gateway has its own copies).
        self._rules: dict[str, AccessRule] = {}
        self._caller_params = {
            op.name: names
            for op in self.spec.operations
            if (names := tuple(p.name for p in op.params if p.source is ParamSource.CALLER))
        }
        self.gate = Gate()
        # The boundary (see orchestro.host.listeners): the public port, and with
        # ``security`` the mesh listener.
        self.listeners = CellListeners(
            self.spec,
            host=self.host,
            port=self.port,
            mesh_port=mesh_port,
            settings=self.settings,
            gate=self.gate,
            identity=identity,
            security=security,
            auth=auth,
            shared_socket=shared_socket,
        )
        self.state = CellState.CREATED
        self._started_hooks = False
        self._started_at = time.time()
        self._registered = False
        self._attached = False
        self._machine: str | None = None  # this machine's address, found once at start

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def instance(self) -> Any:
        """The cell object whose methods serve requests (created by ``start``)."""
        if self._instance is None:
            raise RuntimeError(f"cell {self.name!r} has not been created yet: start it first")
        return self._instance

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def mesh_url(self) -> str | None:
        """The mesh listener's address (``https``, mutual TLS), or ``None`` without one."""
        if self.listeners.mesh is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.mesh_port}"

    def authorize(self, operation: str, caller: Caller) -> tuple[str, ...]:
        """Check an in-process call of ``operation`` by ``caller`` against the rule its
        gateway applies to the same call over the network: :class:`HTTPError` 403 if it is
        refused (in audit mode, counted and logged instead). Returns the names of the
        method's ``Caller`` parameters, which the call is to be given ``caller`` in."""
        rule = self._rules.get(operation)
        if rule is not None and rule.internal:
            decision = rule.check(caller)
            if not decision.allowed:
                if self.policy is PolicyMode.ENFORCE or not decision.audited:
                    raise decision.to_http_error()
                key = (rule.operation, str(caller.cell), decision.rule)
                self.refusals.seen(key, decision.message)
        return self._caller_params.get(operation, ())

    def _access(self, identity: IdentityResolver) -> AccessStep:
        return AccessStep(identity, mode=self.policy, derived=self._derived, refusals=self.refusals)

    async def start(self) -> None:
        """Listen, run ``on_start``, then take requests. Raises :class:`StartupError`.

        If a step fails, the steps that already ran are undone (``on_stop`` runs if
        ``on_start`` did, the listener closes, the record leaves the registry, telemetry
        stops) before the error propagates.
        """
        if self.state is not CellState.CREATED:
            raise RuntimeError(f"cell {self.name!r} was already started ({self.state.value})")
        self.state = CellState.STARTING
        self._started_at = time.time()
        try:
            if self._instance is None:
                self._instance = self._create()
            if self._mesh is not None:
                # Class attributes declared with mesh.client(...) call through this mesh,
                # as this cell: its certificate over the network, its name in process.
                tls = self.security.tls if self.security is not None else None
                self._instance.__dict__.setdefault(MESH_ATTR, self._mesh.bind(self.name, tls))
            self._telemetry = self._start_telemetry()
            self._rules = {
                op.name: rule
                for op in self.spec.operations
                if (rule := rule_of(Route(self.spec, op.service.path, op), self._derived))
                is not None
            }
            await self.listeners.open(
                self._instance, self._telemetry, self._own_routes(), self._access
            )
            self.port = self.listeners.port
            self.mesh_port = self.listeners.mesh_port
            await self._run_on_start()
            self.gate.open()
            await self.listeners.share()  # external traffic once ready
            self.state = CellState.SERVING
            if self._registration is not None:
                if self._needs_machine_address():
                    self._machine = await this_machine()
                # Registered only once ready, so callers never pick an instance still starting.
                self._registered = True
                await self._registration.add(self.registry_record())
            if self._mesh is not None:
                self._mesh.attach(self)  # typed calls from this process come straight here
                self._attached = True
        except BaseException:
            await self._undo_start()
            raise
        self._log.debug("cell %s serving on %s", self.name, self.url)

    async def _undo_start(self) -> None:
        """Undo the steps of a start that failed, each on its own (one failing does not keep
        the others from running); the start's own error is the one that propagates."""
        self.state = CellState.DRAINING
        self.gate.close("stopped")
        mesh, registration, listeners = self._mesh, self._registration, self.listeners
        steps: list[Step] = []
        if self._attached and mesh is not None:
            steps.append(("mesh detach", lambda: now(mesh.detach, self)))
        if self._registered and registration is not None:
            steps.append(("deregister", lambda: registration.remove(self.instance_id)))
        steps.append(("listeners", lambda: listeners.drain(0.0)))
        steps.append(("on_stop", self._run_on_stop))
        self._attached = self._registered = False
        await each(self.name, steps, self._log)
        self.state = CellState.STOPPED
        self._stop_telemetry()

    async def drain(self) -> None:
        """Stop taking requests, finish those in flight, run ``on_stop``, all within the drain
        timeout: ``on_stop`` (when the cell has one) is kept a share of it (a quarter, at most
        5 s), requests in flight get the rest. Idempotent; a step that fails does not keep the
        later ones from running (the first failure is raised at the end)."""
        if self.state in (CellState.DRAINING, CellState.STOPPED):
            return
        if self.state is CellState.CREATED:
            self.state = CellState.STOPPED
            return
        self.state = CellState.DRAINING
        loop = asyncio.get_running_loop()
        budget = self.settings.drain_timeout
        deadline = loop.time() + budget
        reserve = 0.0
        if self._started_hooks and getattr(self._instance, "on_stop", None) is not None:
            reserve = min(ON_STOP_SHARE_MAX, budget * ON_STOP_SHARE)

        def left(until: float) -> float:
            return max(0.0, until - loop.time())

        replica = self.listeners.replica
        # First, no new external connections: the other replicas accept them.
        await self.listeners.unshare()
        # Not ready any more. A replica still answers on its open connections until its
        # listener closes them, rather than refusing what its peers would have served.
        self.gate.close("draining", admit=replica)
        if self._attached and self._mesh is not None:
            self._mesh.detach(self)
            self._attached = False
        self._log.info("cell %s draining", self.name)
        registration = self._registration if self._registered else None
        listeners = self.listeners
        steps: list[Step] = []
        if registration is not None:
            # Callers stop choosing this instance before it stops accepting.
            steps.append(
                (
                    "registry: draining",
                    lambda: registration.set_state(
                        self.instance_id, InstanceState.DRAINING, within=left(deadline)
                    ),
                )
            )
        # Both listeners close together, under the one deadline.
        steps.append(("listeners", lambda: listeners.drain(left(deadline - reserve))))
        if registration is not None:
            steps.append(
                (
                    "deregister",
                    lambda: registration.remove(self.instance_id, within=left(deadline)),
                )
            )
        steps.append(("on_stop", lambda: self._run_on_stop(left(deadline))))
        try:
            await each(self.name, steps, self._log, raise_first=True)
        finally:
            self._registered = False
            self.state = CellState.STOPPED
            self._stop_telemetry()
            self._log.info("cell %s stopped", self.name)

    aclose = drain

    def _known_instances(self) -> Mapping[str, Sequence[Instance]]:
        """Every instance this process knows of (for Prometheus discovery)."""
        if self._mesh is not None and self._mesh.view.loaded:
            return self._mesh.view.cells()
        return {self.name: (self.registry_record(),)}

    def _start_telemetry(self) -> ServerTelemetry | None:
        if not self._telemetry_settings.metrics:
            return None
        telemetry = get_telemetry()
        server = ServerTelemetry(
            telemetry,
            self.name,
            self.instance_id,
            self.gate,
            access_log=self._telemetry_settings.access_log,
        )
        self._telemetry = server  # stopped by _stop_telemetry, even if its start fails
        telemetry.cells.append(self.name)
        server.start()
        # One count for both listeners and in-process calls (audit mode's would-be refusals).
        counts = self.refusals.counts
        server.observe_count(
            "orchestro.policy.audit_refusals",
            "Calls audit mode let through that the policy would refuse, by operation and "
            "calling cell.",
            lambda: [
                ({"orchestro.operation": op, "orchestro.caller": caller}, n)
                for (op, caller, _), n in list(counts.items())
            ],
        )
        return server

    def _own_routes(self) -> dict[str, Any]:
        """The endpoints the host serves beside the gateway's own (with telemetry on)."""
        if self._telemetry is None:
            return {}
        return {
            "/metrics": metrics_handler(get_telemetry(), self.name),
            "/prometheus/sd": sd_handler(self._known_instances),
        }

    def _stop_telemetry(self) -> None:
        if self._telemetry is not None:
            self._telemetry.close()
            cells = get_telemetry().cells
            if self.name in cells:
                cells.remove(self.name)
            self._telemetry = None

    def registry_record(self, state: InstanceState = InstanceState.READY) -> Instance:
        """This instance as the registry stores it."""
        host = self._advertise_host or self.host
        if host in ("", "0.0.0.0", "::"):
            host = self._machine or socket.gethostname()
        return Instance(
            cell=self.name,
            id=self.instance_id,
            host=host,
            port=self.port,
            mesh_port=self.mesh_port if self.listeners.mesh is not None else 0,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            version=self.spec.version,
            labels=self._labels,
            state=state,
            started_at=self._started_at,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()

    def _create(self) -> object:
        try:
            return self.spec.cls()
        except Exception as exc:
            raise StartupError(
                f"cannot create cell {self.name!r}: {self.spec.cls.__qualname__}() raised "
                f"{describe(exc)}"
            ) from exc

    async def _run_on_start(self) -> None:
        hook = getattr(self._instance, "on_start", None)
        if hook is None:
            self._started_hooks = True
            return
        try:
            await hook()
        except Exception as exc:
            raise StartupError(
                f"cell {self.name!r} failed to start: on_start raised {describe(exc)}; fix "
                "on_start (the cell stopped without serving)"
            ) from exc
        self._started_hooks = True

    async def _run_on_stop(self, within: float | None = None) -> None:
        hook = getattr(self._instance, "on_stop", None)
        if hook is None or not self._started_hooks:
            return
        self._started_hooks = False
        try:
            async with asyncio.timeout(within):
                await hook()
        except TimeoutError:
            self._log.warning(
                "cell %s: on_stop did not finish within the drain deadline (%.1f s left); "
                "cancelled",
                self.name,
                within or 0.0,
            )

    def _needs_machine_address(self) -> bool:
        return not self._advertise_host and self.host in ("", "0.0.0.0", "::")
