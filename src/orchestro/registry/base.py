"""The registry protocol and the instance record every backend stores.

A registry keeps the instances of cells that are alive. Each process registers its own
instances under a time to live and keeps them alive (``heartbeat``); an instance whose process
died disappears when its TTL runs out. Every process keeps a watched, in-memory view of the
whole registry (:class:`~orchestro.registry.view.RegistryView`), so resolving a cell never
waits on the registry.
"""

from __future__ import annotations

import enum
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Instance",
    "InstanceState",
    "LeaseLost",
    "ReadOnlyRegistry",
    "Registry",
    "new_instance_id",
]


class InstanceState(enum.StrEnum):
    READY = "ready"
    DRAINING = "draining"


class Instance(BaseModel):
    """One running instance of a cell, as the registry stores it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    cell: str = Field(min_length=1, max_length=63)
    id: str = Field(min_length=1, max_length=200)
    scheme: str = "http"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # The mesh listener (mutual TLS, internal services too); 0: the instance has none.
    mesh_port: int = Field(default=0, ge=0, le=65535)
    pid: int = 0
    hostname: str = ""
    version: str = "0.0.0"
    labels: dict[str, str] = Field(default_factory=dict)  # e.g. zone, weight
    state: InstanceState = InstanceState.READY
    started_at: float = Field(default_factory=time.time)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def mesh_url(self) -> str | None:
        """``https://host:mesh_port``, where cells call it with their identity; ``None`` when
        the instance has no mesh listener."""
        if not self.mesh_port:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.mesh_port}"

    @property
    def ready(self) -> bool:
        return self.state is InstanceState.READY


def new_instance_id(cell: str) -> str:
    """An id unique across machines and restarts: cell, host, pid and a random suffix."""
    return f"{cell}-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class LeaseLost(Exception):
    """The registry forgot this process's registrations (its lease expired): register again."""


class Registry(Protocol):
    """Where instances are registered and found. Chosen by URL; see :func:`open_registry`.

    Registrations of one process share one lease: ``register`` adds or updates an instance
    under it, ``heartbeat`` renews it (raising :class:`LeaseLost` when the registry forgot
    it), ``deregister`` removes one. ``watch`` yields the whole registry at once and then
    after every change. Errors reaching the backend are :class:`~orchestro.errors.DiscoveryError`.
    """

    url: str
    ttl: float

    async def register(self, instance: Instance) -> None: ...

    async def heartbeat(self) -> None: ...

    async def deregister(self, instance_id: str) -> None: ...

    async def list(self) -> Sequence[Instance]: ...

    def watch(self) -> AsyncIterator[Sequence[Instance]]: ...

    async def aclose(self) -> None: ...


class ReadOnlyRegistry:
    """The writes of a registry whose instances are listed elsewhere (DNS records, a URL's
    list): a cell's own record is not kept there, so registering it is nothing."""

    async def register(self, instance: Instance) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def deregister(self, instance_id: str) -> None:
        return None
