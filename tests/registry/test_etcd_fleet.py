"""etcd at fleet scale: one lease per process, and bursts of changes read as one snapshot."""

from __future__ import annotations

import asyncio
import os

import aiohttp

from orchestro.registry import Instance, open_registry
from orchestro.registry.etcd import EtcdRegistry

from ..servers import Etcd


async def metric(etcd: Etcd, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{etcd.http}/metrics") as got:
        for line in (await got.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise LookupError(name)


async def test_a_process_holds_one_lease_for_all_its_instances(etcd_server: Etcd) -> None:
    registry = open_registry(f"{etcd_server.url}/t{os.urandom(4).hex()}", ttl=5)
    before = await metric(etcd_server, "etcd_debugging_lease_granted_total")
    for n in range(20):
        await registry.register(Instance(cell=f"c{n % 3}", id=f"i{n}", host="h", port=1000 + n))
    renewed = await metric(etcd_server, "etcd_debugging_lease_renewed_total")
    await registry.heartbeat()
    assert await metric(etcd_server, "etcd_debugging_lease_granted_total") == before + 1
    assert await metric(etcd_server, "etcd_debugging_lease_renewed_total") == renewed + 1
    assert len(await registry.list()) == 20
    await registry.aclose()  # revokes the lease: every record goes with it
    reader = open_registry(registry.url, ttl=5)
    assert await reader.list() == []
    await reader.aclose()


async def test_a_burst_of_changes_reaches_a_watcher_in_few_snapshots(etcd_server: Etcd) -> None:
    url = f"{etcd_server.url}/t{os.urandom(4).hex()}"
    watcher = open_registry(url, ttl=5)
    writer = open_registry(url, ttl=5)
    assert isinstance(watcher, EtcdRegistry)
    stream = watcher.watch()
    assert await anext(stream) == []  # the first read
    first_event = asyncio.ensure_future(anext(stream))  # the watch is open from here
    await writer.register(Instance(cell="burst", id="i0", host="h", port=1000))
    assert len(await first_event) == 1
    for n in range(1, 40):  # while the watcher reads nothing
        await writer.register(Instance(cell="burst", id=f"i{n}", host="h", port=1000 + n))
    await writer.deregister("i0")
    snapshots = 0
    async with asyncio.timeout(10):
        while True:
            snapshot = await anext(stream)
            snapshots += 1
            if {i.id for i in snapshot} == {f"i{n}" for n in range(1, 40)}:
                break
    assert snapshots < 40  # 40 events, read together rather than one snapshot each
    await stream.aclose()
    await watcher.aclose()
    await writer.aclose()
