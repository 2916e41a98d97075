"""etcd at fleet scale: one lease per process, and bursts of changes read as one snapshot."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

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


async def test_a_failed_renewal_keeps_the_lease_and_an_unknown_lease_is_lost() -> None:
    """A real etcd cannot be made to fail one renewal on demand, so a loopback server replays
    the JSON gateway's answers: a keep-alive stream error (as etcd 3.4 sends when its apply
    lags), then the answer for a lease etcd does not know (no TTL)."""
    from aiohttp import web

    from orchestro import DiscoveryError
    from orchestro.registry import LeaseLost

    answers = [
        {"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: request timed out"}},
        {"result": {"header": {}, "ID": "7", "TTL": "5"}},
        {"result": {"header": {}, "ID": "7"}},
    ]
    grants = 0

    async def grant(request: web.Request) -> web.Response:
        nonlocal grants
        grants += 1
        return web.json_response({"header": {}, "ID": "7", "TTL": "5"})

    async def put(request: web.Request) -> web.Response:
        return web.json_response({"header": {}})

    async def keepalive(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    app = web.Application()
    app.router.add_post("/v3/lease/grant", grant)
    app.router.add_post("/v3/kv/put", put)
    app.router.add_post("/v3/lease/keepalive", keepalive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    registry = EtcdRegistry.from_url(f"etcd://127.0.0.1:{port}", ttl=5)
    try:
        await registry.register(Instance(cell="c", id="i", host="h", port=1))
        with pytest.raises(DiscoveryError, match="etcdserver: request timed out"):
            await registry.heartbeat()  # to retry: not LeaseLost
        await registry.heartbeat()  # the same lease, renewed
        with pytest.raises(LeaseLost):
            await registry.heartbeat()
        assert grants == 1  # the error did not make the process take a new lease
    finally:
        registry._lease = None  # nothing to revoke on the stand-in
        await registry.aclose()
        await runner.cleanup()
