"""The per-policy state a mesh keeps is capped least-recently-used first."""

from __future__ import annotations

from orchestro import CallPolicy, Mesh
from orchestro.mesh.core import MAX_TARGETS
from orchestro.mesh.transports.base import CallRequest, CallResponse
from orchestro.registry import Instance, RegistryView
from orchestro.registry.memory import MemoryRegistry
from orchestro.testing import MockTransport

OK = CallResponse(200, {}, b'"ok"')


async def test_a_hot_target_survives_many_ad_hoc_policies() -> None:
    registry = MemoryRegistry()
    await registry.register(Instance(cell="backend", id="backend-1", host="127.0.0.1", port=9001))
    view = RegistryView(registry)

    def answer(instance: Instance, request: CallRequest) -> CallResponse:
        return OK

    calls = Mesh(view, transport=MockTransport(answer))
    async with calls:
        hot = calls.client("backend")
        await hot.get("/who")  # the first target made: the cell's own policy
        state = calls.target_state("backend")
        assert state is not None
        for n in range(MAX_TARGETS + 10):  # enough to drop the oldest
            adhoc = calls.client("backend", policy=CallPolicy(timeout=1 + n / 1000))
            await adhoc.get("/who")
            await hot.get("/who")
        assert calls.target_state("backend") is state  # kept: used all along
        assert calls.retained()["targets"] <= MAX_TARGETS
    await view.aclose()
