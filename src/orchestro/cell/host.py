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
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from ..config import AuthSettings, GatewaySettings, TelemetrySettings
from ..errors import StartupError
from ..gateway.access import AccessStep, Refusals, rule_of
from ..gateway.admission import Gate
from ..gateway.app import build_gateway
from ..gateway.pipeline import Route
from ..gateway.server import Listener
from ..mesh import MESH_ATTR, Mesh
from ..observability.prometheus import metrics_handler, sd_handler
from ..observability.server import ServerTelemetry
from ..observability.telemetry import get_telemetry
from ..registry.agent import Registration
from ..registry.base import Instance, InstanceState, new_instance_id
from ..security.boundary import CellSecurity
from ..security.identity import Caller, IdentityResolver, anonymous
from ..security.policy import AccessRule, PolicyMode
from .spec import CellSpec, ParamSource, spec_of

__all__ = ["CellHost", "CellState"]

_log = logging.getLogger("orchestro.cell")

Step = tuple[str, Callable[[], Awaitable[None]]]

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
        self._identity = identity
        self._telemetry_settings = telemetry or TelemetrySettings()
        self._telemetry: ServerTelemetry | None = None
        self._shared_socket = shared_socket
        # The boundary: with ``security``, a mesh listener (mutual TLS) serves every service
        # and the public port public services only; without, one port serves all (internal
        # services refuse its anonymous callers).
        self.security = security
        self.mesh_port = mesh_port
        self._mesh_listener: Listener | None = None
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
        self.state = CellState.CREATED
        self._listener: Listener | None = None
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
        if self._mesh_listener is None:
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
            own_routes: dict[str, Any] = {}
            if self._telemetry_settings.metrics:
                telemetry = get_telemetry()
                self._telemetry = ServerTelemetry(
                    telemetry,
                    self.name,
                    self.instance_id,
                    self.gate,
                    access_log=self._telemetry_settings.access_log,
                )
                telemetry.cells.append(self.name)
                self._telemetry.start()
                own_routes = {
                    "/metrics": metrics_handler(telemetry, self.name),
                    "/prometheus/sd": sd_handler(self._known_instances),
                }
            self._rules = {
                op.name: rule
                for op in self.spec.operations
                if (rule := rule_of(Route(self.spec, op.service.path, op), self._derived))
                is not None
            }
            load = self._telemetry.latency_p95 if self._telemetry is not None else None
            security = self.security
            public_routes = dict(own_routes)
            if security is not None and not _loopback(self.host):
                # It lists every instance's host and pid: on an address others can reach,
                # only the mesh listener (a client certificate of the trust domain) says it.
                public_routes.pop("/prometheus/sd", None)
            gateway = build_gateway(
                self.spec,
                self._instance,
                gate=self.gate,
                settings=self.settings,
                identity=self._identity,
                telemetry=self._telemetry,
                own_routes=public_routes,
                load=load,
                access=self._access(self._identity),
                public_only=security is not None,
                auth=self._auth,
            )
            self._listener = Listener(gateway.server(), drain_timeout=self.settings.drain_timeout)
            self.port = await self._listener.start(self.host, self.port, cell=self.name)
            if security is not None:
                mesh_gateway = build_gateway(
                    self.spec,
                    self._instance,
                    gate=self.gate,
                    settings=self.settings,
                    identity=security.resolver,
                    telemetry=self._telemetry,
                    own_routes=own_routes,
                    load=load,
                    access=self._access(security.resolver),
                    auth=self._auth,
                    listener="mesh",  # its counters' series apart from the public port's
                )
                self._mesh_listener = Listener(
                    mesh_gateway.server(), drain_timeout=self.settings.drain_timeout
                )
                try:
                    self.mesh_port = await self._mesh_listener.start(
                        self.host, self.mesh_port, cell=self.name, ssl_context=security.tls.server
                    )
                except StartupError as exc:
                    self._mesh_listener = None
                    raise StartupError(
                        str(exc)
                        .replace("port", "mesh port", 1)
                        .replace("--port or @cell(port=...)", "--mesh-port or [security] mesh_port")
                    ) from exc
            await self._run_on_start()
            self.gate.open()
            if self._shared_socket is not None:
                await self._listener.share(self._shared_socket)  # external traffic once ready
            self.state = CellState.SERVING
            if self._registration is not None:
                if self._needs_machine_address():
                    self._machine = await _this_machine()
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
        mesh, registration, listener = self._mesh, self._registration, self._listener
        mesh_listener = self._mesh_listener
        steps: list[Step] = []
        if self._attached and mesh is not None:
            steps.append(("mesh detach", lambda: _now(mesh.detach, self)))
        if self._registered and registration is not None:
            steps.append(("deregister", lambda: registration.remove(self.instance_id)))
        if listener is not None:
            steps.append(("listener", lambda: listener.drain(0.0)))
        if mesh_listener is not None:
            steps.append(("mesh listener", lambda: mesh_listener.drain(0.0)))
        steps.append(("on_stop", self._run_on_stop))
        self._attached = self._registered = False
        await _each(self.name, steps, self._log)
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

        replica = self._shared_socket is not None
        if replica and self._listener is not None:
            # First, no new external connections: the other replicas accept them.
            await self._listener.unshare()
        # Not ready any more. A replica still answers on its open connections until its
        # listener closes them, rather than refusing what its peers would have served.
        self.gate.close("draining", admit=replica)
        if self._attached and self._mesh is not None:
            self._mesh.detach(self)
            self._attached = False
        self._log.info("cell %s draining", self.name)
        registration = self._registration if self._registered else None
        listener = self._listener
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
        if listener is not None or self._mesh_listener is not None:
            # Both listeners close together, under the one deadline.
            listeners = [x for x in (listener, self._mesh_listener) if x is not None]
            steps.append(
                ("listeners", lambda: _all(x.drain(left(deadline - reserve)) for x in listeners))
            )
        if registration is not None:
            steps.append(
                (
                    "deregister",
                    lambda: registration.remove(self.instance_id, within=left(deadline)),
                )
            )
        steps.append(("on_stop", lambda: self._run_on_stop(left(deadline))))
        try:
            await _each(self.name, steps, self._log, raise_first=True)
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
            mesh_port=self.mesh_port if self._mesh_listener is not None else 0,
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
                f"{_describe(exc)}"
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
                f"cell {self.name!r} failed to start: on_start raised {_describe(exc)}; fix "
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


async def _this_machine() -> str:
    """An address of this machine for other machines, when listening on all addresses
    (resolved through the loop, which never blocks it)."""
    name = socket.gethostname()
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
    except OSError:
        return name
    return str(found[0][4][0]) if found else name


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def _all(drains: Iterable[Awaitable[None]]) -> None:
    """Run the drains together; the first failure is raised once all have finished."""
    results = await asyncio.gather(*drains, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _now(function: Callable[..., object], *args: Any) -> None:
    function(*args)


async def _each(
    cell: str,
    steps: Sequence[Step],
    log: logging.LoggerAdapter[logging.Logger],
    *,
    raise_first: bool = False,
) -> None:
    """Run every step in order, whatever the others do (each is called when its turn comes,
    so a deadline's time left is read then); log each failure."""
    first: BaseException | None = None
    for name, step in steps:
        try:
            await step()
        except Exception as exc:
            log.error("cell %s: %s failed while stopping: %r", cell, name, exc, exc_info=exc)
            first = first or exc
    if first is not None and raise_first:
        raise first


def _describe(exc: BaseException) -> str:
    """``ValueError: boom (at app.py:12)`` — the error and where in user code it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
