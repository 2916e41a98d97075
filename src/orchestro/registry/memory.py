"""``memory://``: a registry inside one process (tests; several cells in one process)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from .base import Instance

__all__ = ["MemoryRegistry"]


class MemoryRegistry:
    """Instances kept in a dictionary; expiry by TTL as in the other backends."""

    def __init__(self, url: str = "memory://", *, ttl: float = 5.0) -> None:
        self.url = url
        self.ttl = ttl
        self._instances: dict[str, tuple[Instance, float]] = {}  # id -> (instance, expires)
        self._mine: set[str] = set()
        self._changed = asyncio.Condition()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, ttl: float) -> MemoryRegistry:
        return cls(url, ttl=ttl)

    async def register(self, instance: Instance) -> None:
        self._instances[instance.id] = (instance, time.monotonic() + self.ttl)
        self._mine.add(instance.id)
        await self._notify()

    async def heartbeat(self) -> None:
        expires = time.monotonic() + self.ttl
        for iid in self._mine:
            if iid in self._instances:
                self._instances[iid] = (self._instances[iid][0], expires)

    async def deregister(self, instance_id: str) -> None:
        self._mine.discard(instance_id)
        if self._instances.pop(instance_id, None) is not None:
            await self._notify()

    async def list(self) -> Sequence[Instance]:
        now = time.monotonic()
        expired = [iid for iid, (_, expires) in self._instances.items() if expires <= now]
        for iid in expired:
            del self._instances[iid]
        return [instance for instance, _ in self._instances.values()]

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        while not self._closed:
            yield await self.list()
            async with self._changed:
                # Wake at least every half TTL: instances may have expired.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=self.ttl / 2)

    async def aclose(self) -> None:
        self._closed = True
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
