"""A cell's ports: the public listener, and with an identity the mesh listener.

With :class:`~orchestro.security.boundary.CellSecurity`, the mesh listener (mutual TLS: a
client certificate of the trust domain) serves every service and ``/prometheus/sd``, and
the public port serves public services only. Without, one port serves all (internal
services refuse its anonymous callers). Both close together, under one drain deadline.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..cell.spec import CellSpec
from ..config import AuthSettings, GatewaySettings
from ..errors import StartupError
from ..gateway.access import AccessStep
from ..gateway.admission import Gate
from ..gateway.app import Gateway, build_gateway
from ..gateway.server import Listener
from ..gateway.telemetry import ServerTelemetry
from ..security.boundary import CellSecurity
from ..security.identity import IdentityResolver

__all__ = ["CellListeners", "loopback"]

# Served by the mesh listener only, unless the cell listens on loopback: it lists every
# instance's host and pid, which only a client certificate of the trust domain may read.
_MESH_ONLY_ROUTES = ("/prometheus/sd",)


class CellListeners:
    """The listeners of one cell instance; ``port`` and ``mesh_port`` are the bound ports
    once :meth:`open` returns (0 asks for an ephemeral one)."""

    def __init__(
        self,
        spec: CellSpec,
        *,
        host: str,
        port: int,
        mesh_port: int,
        settings: GatewaySettings,
        gate: Gate,
        identity: IdentityResolver,
        security: CellSecurity | None,
        auth: AuthSettings | None,
        shared_socket: socket.socket | None,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self.mesh_port = mesh_port
        self._settings = settings
        self._gate = gate
        self._identity = identity
        self._security = security
        self._auth = auth
        self._shared_socket = shared_socket
        self.public: Listener | None = None
        self.mesh: Listener | None = None

    @property
    def replica(self) -> bool:
        """Whether the public port is a socket shared by the controller's replicas."""
        return self._shared_socket is not None

    async def open(
        self,
        instance: object,
        telemetry: ServerTelemetry | None,
        own_routes: dict[str, Any],
        access: Callable[[IdentityResolver], AccessStep],
    ) -> None:
        """Listen on both ports (the shared socket is joined later, by :meth:`share`)."""
        security = self._security
        public_routes = dict(own_routes)
        if security is not None and not loopback(self.host):
            for path in _MESH_ONLY_ROUTES:
                public_routes.pop(path, None)
        load = telemetry.latency_p95 if telemetry is not None else None

        def gateway(identity: IdentityResolver, routes: dict[str, Any], **more: Any) -> Gateway:
            return build_gateway(
                self.spec,
                instance,
                gate=self._gate,
                settings=self._settings,
                identity=identity,
                telemetry=telemetry,
                own_routes=routes,
                load=load,
                access=access(identity),
                auth=self._auth,
                **more,
            )

        public = gateway(self._identity, public_routes, public_only=security is not None)
        self.public = Listener(public.server(), drain_timeout=self._settings.drain_timeout)
        self.port = await self.public.start(self.host, self.port, cell=self.spec.name)
        if security is None:
            return
        # Its counters' series are labelled apart from the public port's.
        mesh_gateway = gateway(security.resolver, own_routes, listener="mesh")
        mesh = Listener(
            mesh_gateway.server(),
            drain_timeout=self._settings.drain_timeout,
            max_tls_handshakes=self._settings.max_tls_handshakes,
        )
        try:
            self.mesh_port = await mesh.start(
                self.host, self.mesh_port, cell=self.spec.name, ssl_context=security.tls.server
            )
        except StartupError as exc:
            raise StartupError(
                str(exc)
                .replace("port", "mesh port", 1)
                .replace("--port or @cell(port=...)", "--mesh-port or [security] mesh_port")
            ) from exc
        self.mesh = mesh

    async def share(self) -> None:
        """Take external connections from the replicas' shared socket (once ready)."""
        if self._shared_socket is not None and self.public is not None:
            await self.public.share(self._shared_socket)

    async def unshare(self) -> None:
        """No new external connections: the other replicas accept them."""
        if self._shared_socket is not None and self.public is not None:
            await self.public.unshare()

    def drains(self) -> list[Callable[[float], Awaitable[None]]]:
        """The drain of each open listener, to run together under one deadline."""
        return [x.drain for x in (self.public, self.mesh) if x is not None]

    async def drain(self, within: float) -> None:
        """Close both listeners together, finishing requests in flight within ``within``."""
        await _all(drain(within) for drain in self.drains())


def loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def _all(drains: Iterable[Awaitable[None]]) -> None:
    """Run the drains together; the first failure is raised once all have finished."""
    results = await asyncio.gather(*drains, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
