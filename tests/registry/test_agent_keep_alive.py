"""A registration keep-alive that hits an unexpected error is restarted, not lost."""

from __future__ import annotations

import asyncio

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
