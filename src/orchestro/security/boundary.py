"""What a cell's host wires for its boundary: identity, TLS contexts, the peer resolver.

One object per hosted cell, opened at start, before the listeners::

    security = CellSecurity.open("vault", SecuritySettings())
    tasks.start("identity", security.keep_fresh)            # renewal / file reloads
    mesh_site = web.TCPSite(runner, host, mesh_port, ssl_context=security.tls.server)
    gateway = build_gateway(..., identity=security.resolver)  # the mesh listener's resolver
    session.get(url, ssl=security.tls.client, server_hostname=security.tls.server_name(cell))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .settings import SecuritySettings
from .sources import IdentitySource, keep_fresh, open_identity
from .tls import CellTLS, PeerIdentity

__all__ = ["CellSecurity"]


@dataclass(eq=False)
class CellSecurity:
    """The identity of one cell, the TLS contexts made from it, and who its peers are."""

    settings: SecuritySettings
    source: IdentitySource
    tls: CellTLS
    resolver: PeerIdentity

    @classmethod
    def open(
        cls, cell: str, settings: SecuritySettings, *, now: dt.datetime | None = None
    ) -> CellSecurity:
        """``cell``'s identity (from the configured files, else the development CA), ready."""
        source = open_identity(cell, settings, now=now)
        return cls(settings, source, CellTLS(source.current), PeerIdentity(settings.trust_domain))

    async def keep_fresh(self) -> None:
        """The renewal loop (run it under :class:`~orchestro.background.Background`)."""
        await keep_fresh(self.tls, self.source, interval=self.settings.reload_interval)
