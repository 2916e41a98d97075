"""What a caller keeps stays bounded: 10,000 instance arrivals and departures, calls in
between, ad-hoc policies and fallbacks per call, and the mesh ends as it began (issue 13.4)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from orchestro import CallPolicy, Mesh
from orchestro.mesh.core import MAX_STUBS, MAX_TARGETS
from orchestro.mesh.transports.base import CallRequest, CallResponse
from orchestro.registry import Instance, RegistryView
from orchestro.registry.memory import MemoryRegistry
from orchestro.testing import MockTransport

pytestmark = pytest.mark.slow  # about a minute: tracemalloc traces every allocation

OK = CallResponse(200, {}, b"1")
ARRIVALS = 10_000
WARM_UP = 1_500  # more than the caches' bounds: they are full before measuring


def record(n: int) -> Instance:
    return Instance(cell="backend", id=f"backend-{n}", host="127.0.0.1", port=1 + n % 60000)


async def test_state_stays_flat_through_10000_arrivals_and_departures() -> None:
    registry = MemoryRegistry(ttl=3600)
    view = RegistryView(registry)

    def answer(instance: Instance, request: CallRequest) -> CallResponse:
        return OK

    calls = Mesh(view, transport=MockTransport(answer))
    await calls.start()
    transport = calls.transport
    assert isinstance(transport, MockTransport)
    await registry.register(record(0))  # one instance stays throughout
    raw = calls.client("backend")
    base = CallPolicy()

    async def churn(first: int, count: int) -> None:
        for n in range(first, first + count):
            await registry.register(record(n))
            await view.wait_for(lambda v, n=n: len(v.ready("backend")) == 2)
            await raw.get("/who")
            await raw.get("/who")  # both instances are picked, failures recorded too
            # An ad-hoc policy and a fallback made per call (a common mistake).
            policy = base.model_copy(update={"timeout": 1 + n % 3000})
            adhoc = calls.client("backend", policy=policy)
            await adhoc.get("/who", fallback=lambda error: None)
            await registry.deregister(record(n).id)
            await view.wait_for(lambda v: len(v.ready("backend")) == 1)
            transport.requests.clear()

    # Traced from the start: what the warm-up allocates and the churn frees is counted too.
    tracemalloc.start()
    try:
        await churn(1, WARM_UP)  # every cache at its working size
        gc.collect()
        baseline = calls.retained()
        before = tracemalloc.take_snapshot()
        async with asyncio.timeout(600):
            await churn(WARM_UP + 1, ARRIVALS)
        gc.collect()
        after = tracemalloc.take_snapshot()
        retained = calls.retained()
    finally:
        tracemalloc.stop()
        await calls.aclose()
        await view.aclose()

    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"\ntracemalloc: {growth / 1024:+.1f} KiB over {ARRIVALS} arrivals and departures")
    print(f"retained before: {baseline}\nretained after:  {retained}")
    # Per-instance state: the instances of the view when each target last looked (two at
    # most here), never one per instance ever seen.
    assert retained["stats"] <= 2 * retained["targets"]
    assert retained["health"] <= 2 * retained["targets"]
    assert retained["indexed"] <= 2 * retained["targets"]
    # Per-policy state: bounded, not one per call.
    assert retained["targets"] <= MAX_TARGETS
    assert retained["target_index"] <= 4 * MAX_TARGETS
    assert retained["stubs"] <= MAX_STUBS
    assert retained["targets"] == baseline["targets"] == MAX_TARGETS
    assert retained["stubs"] == baseline["stubs"] == MAX_STUBS
    # Memory: flat (a leak of even 100 bytes per arrival would show 1 MB).
    assert growth < 512 * 1024, growth
