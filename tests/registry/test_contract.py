"""What every registry backend does, run against memory://, local:// and a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from orchestro.registry import Instance, InstanceState, LeaseLost, RegistryView, new_instance_id

from .conftest import Opener


def make(cell: str = "orders", port: int = 9001, **fields: object) -> Instance:
    return Instance(
        cell=cell, id=new_instance_id(cell), host="127.0.0.1", port=port, pid=1, **fields
    )


def ids(instances: Sequence[Instance]) -> set[str]:
    return {i.id for i in instances}


async def test_register_list_update_deregister(opener: Opener) -> None:
    registry = opener()
    a, b = make(port=9001, labels={"zone": "eu-1"}), make("billing", 9002)
    await registry.register(a)
    await registry.register(b)
    listed = {i.id: i for i in await opener().list()}
    assert set(listed) == {a.id, b.id}
    assert listed[a.id] == a
    assert listed[a.id].url == "http://127.0.0.1:9001"

    await registry.register(a.model_copy(update={"state": InstanceState.DRAINING}))
    states = {i.id: i.state for i in await opener().list()}
    assert states[a.id] is InstanceState.DRAINING

    await registry.deregister(a.id)
    assert ids(await opener().list()) == {b.id}


async def test_instances_expire_without_heartbeat_and_live_with_it(opener: Opener) -> None:
    ttl = 2.0
    registry = opener(ttl)
    kept, dropped = make(port=9001), make(port=9002)
    await registry.register(kept)
    other = opener(ttl) if opener(ttl) is not registry else registry
    await other.register(dropped)
    # only `registry` renews; `dropped` belongs to a client that stopped (a killed process)
    if other is registry:
        pytest.skip("memory:// has one client: nothing can stop renewing alone")
    deadline = asyncio.get_running_loop().time() + ttl * 4
    while dropped.id in ids(await registry.list()):
        assert asyncio.get_running_loop().time() < deadline, "expired instance still listed"
        await registry.heartbeat()
        await asyncio.sleep(0.25)
    assert kept.id in ids(await registry.list())


async def test_heartbeat_after_expiry_reports_the_lease_lost(opener: Opener) -> None:
    ttl = 2.0
    registry = opener(ttl)
    await registry.register(make())
    await asyncio.sleep(ttl + 1.5)
    if registry.url.startswith("memory"):
        await registry.list()  # memory:// expires on read
        await registry.heartbeat()
        assert await registry.list() == []
        return
    with pytest.raises(LeaseLost):
        await registry.heartbeat()
    await registry.register(make("again"))  # and registering works again
    assert [i.cell for i in await registry.list()] == ["again"]


async def test_watch_sees_other_clients_changes(opener: Opener) -> None:
    writer = opener()
    async with RegistryView(opener()) as view:
        async with asyncio.timeout(5):
            await view.wait_ready()
        assert view.cells() == {}
        first, second = make(port=9001), make(port=9002)
        await writer.register(first)
        await writer.register(second)
        async with asyncio.timeout(5):
            await view.wait_for(lambda v: len(v.ready("orders")) == 2)
        assert ids(view.instances("orders")) == {first.id, second.id}

        await writer.register(first.model_copy(update={"state": InstanceState.DRAINING}))
        async with asyncio.timeout(5):
            await view.wait_for(lambda v: len(v.ready("orders")) == 1)
        assert view.ready("orders")[0].id == second.id
        assert len(view.instances("orders")) == 2

        await writer.deregister(first.id)
        await writer.deregister(second.id)
        async with asyncio.timeout(5):
            await view.wait_for(lambda v: not v.instances("orders"))
