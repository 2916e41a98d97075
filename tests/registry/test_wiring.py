"""A cell registers once ready, turns draining before it stops accepting, then leaves; the
registration agent rides out registry outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from orchestro import DiscoveryError, cell, service
from orchestro.host import CellHost
from orchestro.registry import (
    Instance,
    InstanceState,
    LeaseLost,
    Registration,
    RegistryView,
)
from orchestro.registry.memory import MemoryRegistry


@cell("waiter")
class Waiter:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    @service.get("/ping")
    async def ping(self) -> str:
        return "pong"


async def test_cell_registers_when_ready_and_leaves_when_draining() -> None:
    events: list[tuple[str, str, bool]] = []
    host: CellHost

    async def accepting() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", host.port)
        except ConnectionRefusedError:
            return False
        writer.close()
        return True

    class Recording(MemoryRegistry):
        async def register(self, instance: Instance) -> None:
            events.append(("register", instance.state.value, await accepting()))
            await super().register(instance)

        async def deregister(self, instance_id: str) -> None:
            events.append(("deregister", instance_id, await accepting()))
            await super().deregister(instance_id)

    registry = Recording(ttl=5)
    registration = Registration(registry)
    host = CellHost(
        Waiter, host="127.0.0.1", port=0, registration=registration, labels={"zone": "z1"}
    )
    async with RegistryView(registry) as view:
        await host.start()
        async with asyncio.timeout(5):
            await view.wait_for(lambda v: bool(v.ready("waiter")))
        record = view.ready("waiter")[0]
        assert (record.url, record.labels, record.id) == (
            host.url,
            {"zone": "z1"},
            host.instance_id,
        )
        assert record.pid > 0
        await host.drain()
        async with asyncio.timeout(5):
            await view.wait_for(lambda v: not v.instances("waiter"))
    # registered once serving; marked draining while still accepting; removed once closed
    assert events == [
        ("register", "ready", True),
        ("register", "draining", True),
        ("deregister", host.instance_id, False),
    ]
    await registration.aclose()


class Flaky:
    """A real memory registry behind a switch that makes it unreachable (fault injection)."""

    def __init__(self, ttl: float) -> None:
        self.inner = MemoryRegistry(ttl=ttl)
        self.url = "flaky://"
        self.ttl = ttl
        self.down = False
        self.forget = False

    def _check(self) -> None:
        if self.down:
            raise DiscoveryError("registry flaky://: unreachable")

    async def register(self, instance: Instance) -> None:
        self._check()
        await self.inner.register(instance)

    async def heartbeat(self) -> None:
        self._check()
        if self.forget:
            self.forget = False
            self.inner._instances.clear()
            raise LeaseLost("forgotten")
        await self.inner.heartbeat()

    async def deregister(self, instance_id: str) -> None:
        self._check()
        await self.inner.deregister(instance_id)

    async def list(self) -> Sequence[Instance]:
        self._check()
        return await self.inner.list()

    def watch(self):  # type: ignore[no-untyped-def]
        return self.inner.watch()

    async def aclose(self) -> None:
        await self.inner.aclose()


def instance() -> Instance:
    return Instance(cell="a", id="a-1", host="127.0.0.1", port=1)


async def test_registration_survives_an_outage_and_registers_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(ttl=0.9)
    flaky.down = True
    agent = Registration(flaky, first_attempt_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="orchestro.registry"):
        await agent.add(instance())  # does not raise: the cell keeps serving
        assert not agent.healthy
        await asyncio.sleep(1.2)  # the registry stays down past the TTL
        flaky.down = False
        async with asyncio.timeout(5):
            while not await flaky.inner.list():
                await asyncio.sleep(0.05)
    assert [i.id for i in await flaky.inner.list()] == ["a-1"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1  # one warning per outage
    assert messages[0].startswith("registry flaky:// unreachable")
    assert any("reachable again" in m for m in messages)
    await agent.aclose()
    assert await flaky.inner.list() == []


async def test_a_lost_lease_is_registered_again() -> None:
    flaky = Flaky(ttl=0.6)
    agent = Registration(flaky)
    await agent.add(instance())
    flaky.forget = True
    async with asyncio.timeout(5):
        while not flaky.forget and not await flaky.inner.list():
            await asyncio.sleep(0.05)
        while not await flaky.inner.list():
            await asyncio.sleep(0.05)
    assert [i.id for i in await flaky.inner.list()] == ["a-1"]
    await agent.aclose()


async def test_the_view_keeps_its_last_good_contents_when_the_registry_fails() -> None:
    class Failing(MemoryRegistry):
        calls = 0

        async def watch(self):  # type: ignore[no-untyped-def,override]
            self.calls += 1
            if self.calls > 1:
                raise DiscoveryError("registry failing://: down")
            async for snapshot in super().watch():
                yield snapshot
                raise DiscoveryError("registry failing://: connection lost")

    registry = Failing(ttl=5)
    await registry.register(instance())
    async with RegistryView(registry, max_backoff=0.05) as view:
        async with asyncio.timeout(5):
            await view.wait_ready()
        await asyncio.sleep(0.3)  # several failed reconnections
        assert registry.calls > 2
        assert not view.healthy
        assert [i.id for i in view.ready("a")] == ["a-1"]
    assert InstanceState.READY.value == "ready"
