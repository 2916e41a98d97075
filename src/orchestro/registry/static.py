"""``static://name=http://host:port,...``: fixed addresses (Kubernetes Services, tests).

An address may name its mesh listener's port (mutual TLS; see docs/concepts/security.md):
``static://vault=http://10.0.0.5:8080?mesh=8443``. Registration is accepted and ignored: the
addresses are what the URL says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError
from .base import Instance, ReadOnlyRegistry

__all__ = ["StaticRegistry"]


class StaticRegistry(ReadOnlyRegistry):
    def __init__(self, url: str, instances: Sequence[Instance], *, ttl: float = 5.0) -> None:
        self.url = url
        self.ttl = ttl
        self._instances = list(instances)
        self._closed = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, *, ttl: float) -> StaticRegistry:
        body = url.split("://", 1)[1]
        instances: list[Instance] = []
        for n, entry in enumerate(filter(None, unquote(body).split(","))):
            name, sep, address = entry.partition("=")
            parts = urlsplit(address)
            if not sep or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"registry URL {url!r}: {entry!r} is not name=http://host:port; write e.g. "
                    "static://orders=http://10.0.0.5:8080,orders=http://10.0.0.6:8080"
                )
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError as exc:
                raise ConfigurationError(f"registry URL {url!r}: {entry!r}: {exc}") from None
            mesh = parse_qs(parts.query).get("mesh", ["0"])[-1]
            if not mesh.isdigit() or not 0 <= int(mesh) <= 65535:
                raise ConfigurationError(
                    f"registry URL {url!r}: {entry!r}: mesh={mesh!r} is not a port; write e.g. "
                    "vault=http://10.0.0.5:8080?mesh=8443"
                )
            instances.append(
                Instance(
                    cell=name,
                    id=f"{name}-static-{n}",
                    scheme=parts.scheme,
                    host=parts.hostname,
                    port=port,
                    mesh_port=int(mesh),
                    hostname=parts.hostname,
                )
            )
        return cls(url, instances, ttl=ttl)

    async def list(self) -> Sequence[Instance]:
        return list(self._instances)

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        yield list(self._instances)
        await self._closed.wait()

    async def aclose(self) -> None:
        self._closed.set()
