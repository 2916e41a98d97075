"""The registry view: supervised (a failing watch is restarted) and never blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from orchestro import Mesh
from orchestro.registry import Instance, RegistryView, open_registry
from orchestro.registry.memory import MemoryRegistry


class FlakyWatch(MemoryRegistry):
    """A memory registry whose watch hits an unexpected error (a bug) the first ``fail``
    times, after yielding one snapshot."""

    def __init__(self, fail: int) -> None:
        super().__init__(ttl=5)
        self.fail = fail
        self.watches = 0

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        self.watches += 1
        async for snapshot in super().watch():
            yield snapshot
            if self.fail:
                self.fail -= 1
                raise KeyError("a bug in the watch")


def record(n: int) -> Instance:
    return Instance(cell="orders", id=f"orders-{n}", host="127.0.0.1", port=9000 + n)


async def test_an_unexpected_watch_failure_is_counted_and_the_view_recovers() -> None:
    registry = FlakyWatch(fail=2)
    await registry.register(record(1))
    view = RegistryView(registry)
    await view.start()
    try:
        async with asyncio.timeout(10):
            await view.wait_for(lambda v: registry.watches >= 3)
        await registry.register(record(2))  # seen by the restarted watch
        async with asyncio.timeout(10):
            await view.wait_for(lambda v: len(v.ready("orders")) == 2)
        assert view.background is not None
        assert view.background.failures == {"watch": 2}
        assert view.background.running("watch")
        assert view.healthy
    finally:
        await view.aclose()


async def test_an_unreachable_registry_is_an_outage_not_a_failure() -> None:
    class Down(MemoryRegistry):
        def __init__(self) -> None:
            super().__init__(ttl=5)
            self.tries = 0

        async def watch(self) -> AsyncIterator[Sequence[Instance]]:
            from orchestro.errors import DiscoveryError

            self.tries += 1
            if self.tries < 3:
                raise DiscoveryError("registry memory:// unreachable")
            async for snapshot in super().watch():
                yield snapshot

    registry = Down()
    view = RegistryView(registry, max_backoff=0.01)
    await view.start()
    try:
        async with asyncio.timeout(10):
            await view.wait_ready()
        assert view.background is not None
        assert view.background.failures == {}  # retried by the view itself, not a bug
    finally:
        await view.aclose()


async def test_a_locked_sqlite_file_never_blocks_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    # Another process holds the file locked (in rollback-journal mode, an exclusive lock
    # stops every other connection, even from switching it to WAL).
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE held (x)")
    holder.execute("BEGIN EXCLUSIVE")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    mesh = Mesh(f"local://{path}")  # constructing it touches no file
    starting = asyncio.create_task(mesh.start())  # opens the file: waits for the lock
    try:
        # The loop keeps running while the open waits for the lock.
        async with asyncio.timeout(30):
            while ticks < 20:
                await asyncio.sleep(0.01)
        assert not starting.done()
        holder.execute("COMMIT")  # the other process lets go
        async with asyncio.timeout(30):
            await starting
            await mesh.view.wait_ready()
        assert mesh.view.ready("orders") == ()
    finally:
        stop.set()
        await ticking
        holder.close()
        await mesh.aclose()


async def test_the_local_registry_reports_a_bad_file_when_first_used(tmp_path: Path) -> None:
    registry = open_registry(f"local://{tmp_path / 'registry.db'}")  # no I/O yet
    assert not (tmp_path / "registry.db").exists()
    assert await registry.list() == []
    await registry.aclose()
