"""A registration keep-alive that hits an unexpected error is restarted, not lost."""

from __future__ import annotations

import asyncio

from orchestro.errors import DiscoveryError
from orchestro.registry import Registration
from orchestro.registry.base import Instance, InstanceState
from orchestro.registry.memory import MemoryRegistry


class Buggy(MemoryRegistry):
    """A backend whose heartbeat fails twice with a bug (not a DiscoveryError)."""

    bugs = 2
    beats = 0

    async def heartbeat(self) -> None:
        if self.bugs:
            self.bugs -= 1
            raise KeyError("a bug in a backend")
        self.beats += 1
        await super().heartbeat()


async def test_a_keep_alive_bug_is_logged_counted_and_the_loop_restarted() -> None:
    registry = Buggy(ttl=0.3)  # a heartbeat every 0.1 s
    agent = Registration(registry)
    await agent.add(Instance(cell="a", id="a-1", host="127.0.0.1", port=1))
    async with asyncio.timeout(20):
        while registry.beats < 2:
            await asyncio.sleep(0.05)
    assert agent._tasks.failures == {"keep-alive": 2}
    assert [i.id for i in await registry.list()] == ["a-1"]
    await agent.aclose()
    assert await registry.list() == []


async def test_add_and_set_state_after_aclose_do_nothing() -> None:
    registry = MemoryRegistry(ttl=30)
    agent = Registration(registry)
    instance = Instance(cell="a", id="a-1", host="127.0.0.1", port=1)
    await agent.add(instance)
    await agent.aclose()
    # A drain step still running after a forced exit's aclose: no error, no ghost record.
    await agent.set_state("a-1", InstanceState.DRAINING)
    await agent.add(instance)
    assert await registry.list() == []
    assert not agent._tasks.running("keep-alive")


class Flaky(MemoryRegistry):
    """A backend that is unreachable for a while: writes and renewals fail, the lease lives."""

    down = False

    def __init__(self, ttl: float) -> None:
        super().__init__(ttl=ttl)
        self.writes: list[str] = []
        self.beats = 0

    async def register(self, instance: Instance) -> None:
        if self.down:
            raise DiscoveryError("registry down")
        self.writes.append(instance.id)
        await super().register(instance)

    async def heartbeat(self) -> None:
        if self.down:
            raise DiscoveryError("registry down")
        self.beats += 1
        await super().heartbeat()


async def test_after_an_outage_only_the_records_that_failed_are_written_again() -> None:
    registry = Flaky(ttl=0.3)  # a renewal every 0.1 s
    agent = Registration(registry, first_attempt_timeout=0.2)
    for n in range(3):
        await agent.add(Instance(cell="a", id=f"a-{n}", host="127.0.0.1", port=1 + n))
    registry.down = True
    # During the outage one instance starts draining: that write fails.
    await agent.set_state("a-1", InstanceState.DRAINING)
    assert not agent.healthy
    registry.writes.clear()
    registry.down = False

    async def renewed() -> None:
        while not agent.healthy:
            await asyncio.sleep(0.02)

    async with asyncio.timeout(20):
        await renewed()
    # The lease lived through it: the two records written before are still there; only the
    # one whose write failed is written again (not all three: that loads a registry that is
    # already struggling, and a fleet of processes doing it at once is a storm).
    assert registry.writes == ["a-1"]
    states = {i.id: i.state for i in await registry.list()}
    assert states == {
        "a-0": InstanceState.READY,
        "a-1": InstanceState.DRAINING,
        "a-2": InstanceState.READY,
    }
    await agent.aclose()
