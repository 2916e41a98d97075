"""Riding out restarts: waiting for an instance, resending what was refused unprocessed, and
Retry-After only for the instance that asked for it (mock transport, memory registry)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestro import CallPolicy, Mesh, NoInstancesError, RemoteError, TransportError
from orchestro.errors import CallError
from orchestro.gateway.admission import UNPROCESSED_HEADER as GATEWAY_HEADER
from orchestro.mesh import pipeline
from orchestro.mesh.outcomes import UNPROCESSED_HEADER, retryable, unprocessed
from orchestro.mesh.target import DRAINING_MARK
from orchestro.mesh.transports.base import CallRequest, CallResponse
from orchestro.mesh.waiting import unprocessed_pause
from orchestro.registry import Instance, RegistryView
from orchestro.registry.memory import MemoryRegistry
from orchestro.testing import FakeClock, MockTransport, read_metrics

REFUSED = CallResponse(
    503, {"Retry-After": "1", UNPROCESSED_HEADER: "1"}, b'{"title":"Service Unavailable"}'
)
OK = CallResponse(200, {}, b'"ok"')


def record(n: int) -> Instance:
    return Instance(cell="backend", id=f"backend-{n}", host="127.0.0.1", port=9000 + n)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The mesh's retry pauses, recorded and not slept (no timing in these tests)."""
    seen: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        seen.append(delay)
        await real_sleep(0)
        return result

    monkeypatch.setattr(pipeline.asyncio, "sleep", sleep)
    return seen


async def mesh_over(registry: MemoryRegistry, handler: Any, **policy: Any) -> AsyncIterator[Mesh]:
    view = RegistryView(registry)
    calls = Mesh(view, transport=MockTransport(handler), policy=CallPolicy(**policy))
    await calls.start()
    try:
        yield calls
    finally:
        await calls.aclose()
        await view.aclose()


def test_both_sides_spell_the_unprocessed_mark_alike() -> None:
    assert GATEWAY_HEADER == UNPROCESSED_HEADER


def test_resends_of_refused_requests_are_paced_not_burnt() -> None:
    highest = [unprocessed_pause(n, 0.025, 1.0, rng=lambda lo, hi: hi) for n in range(1, 9)]
    lowest = [unprocessed_pause(n, 0.025, 1.0, rng=lambda lo, hi: lo) for n in range(1, 9)]
    assert highest == [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert lowest == [h / 2 for h in highest]  # never close to zero


async def test_a_post_refused_unprocessed_is_resent_beyond_max_attempts(
    pauses: list[float],
) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    answers = [REFUSED, REFUSED, REFUSED, REFUSED, OK]
    seen: list[CallRequest] = []

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        seen.append(request)
        return answers.pop(0)

    async for calls in mesh_over(registry, handler, max_attempts=2):
        assert await calls.client("backend").post("/orders", json={"n": 1}) == "ok"
    assert len(seen) == 5
    assert all(r.method == "POST" for r in seen)
    # Paced (equal jitter, doubling), and Retry-After (1 s) honoured: the same instance.
    assert len(pauses) == 4
    assert all(p >= 1.0 for p in pauses)


async def test_a_plain_503_to_a_post_is_not_retried(pauses: list[float]) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    plain = CallResponse(503, {}, b'{"detail":"busy in the service"}')
    async for calls in mesh_over(registry, lambda i, r: plain):
        with pytest.raises(RemoteError) as info:
            await calls.client("backend").post("/orders", json={})
    assert info.value.status == 503
    assert pauses == []


async def test_a_refused_connection_is_resent_for_any_method(pauses: list[float]) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    failures = [3]

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        if failures[0]:
            failures[0] -= 1
            raise TransportError("cannot connect: refused", connect=True)
        return OK

    async for calls in mesh_over(registry, handler, max_attempts=1):
        assert await calls.client("backend").post("/orders", json={}) == "ok"
    assert len(pauses) == 3
    assert pauses == sorted(pauses)  # doubling from 25 ms (jittered in the upper half)
    assert all(p >= 0.0125 for p in pauses)  # never burnt back to back


async def test_retry_after_is_not_slept_for_another_ready_instance(pauses: list[float]) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    await registry.register(record(2))
    slow_down = CallResponse(503, {"Retry-After": "30"}, b"{}")
    asked: list[str] = []

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        asked.append(instance.id)
        return slow_down if len(asked) == 1 else OK

    async for calls in mesh_over(registry, handler):
        assert await calls.client("backend").get("/who") == "ok"
    assert len(set(asked)) == 2  # the retry went to the other instance
    assert len(pauses) == 1
    assert pauses[0] < 30


async def test_retry_after_is_slept_when_the_same_instance_is_retried(
    pauses: list[float],
) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    answers = [CallResponse(503, {"Retry-After": "2"}, b"{}"), OK]
    async for calls in mesh_over(registry, lambda i, r: answers.pop(0)):
        assert await calls.client("backend").get("/who") == "ok"
    assert pauses == [2.0]


async def test_a_call_waits_for_an_instance_to_appear() -> None:
    registry = MemoryRegistry()
    late = Instance(cell="late-backend", id="late-1", host="127.0.0.1", port=9001)
    async for calls in mesh_over(registry, lambda i, r: OK, timeout=30, wait_for_instances=30):
        call = asyncio.create_task(calls.client("late-backend").get("/who"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not call.done()  # waiting, not failed
        await registry.register(late)  # the restarted instance is ready
        async with asyncio.timeout(10):
            assert await call == "ok"
    metrics = read_metrics()
    labels = {"server_address": "late-backend", "orchestro_wait_outcome": "ready"}
    assert metrics.value("orchestro_mesh_waits_total", **labels) == 1
    assert metrics.value("orchestro_mesh_wait_duration_seconds_count", **labels) == 1


async def test_waiting_for_an_instance_is_bounded() -> None:
    registry = MemoryRegistry()
    async for calls in mesh_over(registry, lambda i, r: OK, timeout=30, wait_for_instances=0.05):
        with pytest.raises(NoInstancesError):
            await calls.client("backend").get("/who")


async def test_an_instance_that_says_draining_is_skipped_ahead_of_the_view(
    pauses: list[float],
) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    await registry.register(record(2))
    draining = CallResponse(503, {"Retry-After": "1", UNPROCESSED_HEADER: "draining"}, b"{}")
    asked: list[str] = []

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        asked.append(instance.id)
        return draining if instance.id == "backend-1" else OK

    async for calls in mesh_over(registry, handler, balancer="round-robin"):
        raw = calls.client("backend")
        for _ in range(10):
            assert await raw.post("/orders", json={}) == "ok"
        # The view still lists it ready; the caller stopped choosing it after its answer.
        assert len(calls.view.ready("backend")) == 2
        assert asked.count("backend-1") == 1
        await registry.deregister("backend-1")  # it leaves the view: forgotten
        await calls.view.wait_for(lambda v: len(v.ready("backend")) == 1)
        await raw.get("/who")
        target = calls.target_state("backend")
        assert target is not None
        assert target.draining == {}


DRAINING = CallResponse(503, {"Retry-After": "1", UNPROCESSED_HEADER: "draining"}, b"{}")


def once_draining() -> Any:
    """A handler that answers "draining" once, then healthy answers (a restart in place)."""
    answers = [DRAINING]

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        return answers.pop() if answers else OK

    return handler


async def test_one_draining_answer_does_not_strand_a_static_registry_cell(
    pauses: list[float],
) -> None:
    # static:// never replaces the cell's tuple, so only the mark's own rules can clear it.
    calls = Mesh(
        "static://backend=http://127.0.0.1:9001",
        transport=MockTransport(once_draining()),
        policy=CallPolicy(timeout=30, wait_for_instances=30),
    )
    async with calls:
        raw = calls.client("backend")
        for _ in range(5):
            assert await raw.post("/orders", json={}) == "ok"


async def test_one_draining_answer_does_not_strand_a_url_client(pauses: list[float]) -> None:
    registry = MemoryRegistry()
    async for calls in mesh_over(registry, once_draining(), timeout=30, wait_for_instances=30):
        raw = calls.client("http://payments.example")
        for _ in range(5):
            assert await raw.post("/charge", json={}) == "ok"


async def test_the_draining_mark_expires(pauses: list[float]) -> None:
    registry = MemoryRegistry()
    await registry.register(record(1))
    await registry.register(record(2))
    clock = FakeClock()
    asked: list[str] = []
    answers = [DRAINING]

    def handler(instance: Instance, request: CallRequest) -> CallResponse:
        asked.append(instance.id)
        if instance.id == "backend-1" and answers:
            return answers.pop()
        return OK

    view = RegistryView(registry)
    calls = Mesh(
        view,
        transport=MockTransport(handler),
        policy=CallPolicy(balancer="round-robin"),
        clock=clock,
    )
    async with calls:
        raw = calls.client("backend")
        for _ in range(4):
            await raw.get("/who")
        assert asked.count("backend-1") == 1  # marked: skipped while the view still lists it
        clock.advance(DRAINING_MARK + 0.1)  # restarted in place (same id): tried again
        for _ in range(4):
            await raw.get("/who")
        assert asked.count("backend-1") > 1
    await view.aclose()


@pytest.mark.parametrize(
    "error",
    [
        TransportError("refused", connect=True),
        TransportError("reset"),
        RemoteError("busy", status=503, problem={"_unprocessed": True}),
        RemoteError("plain", status=503, problem={}),
        RemoteError("bad", status=400, problem={}),
    ],
)
def test_what_was_not_processed_is_retryable_for_any_method(error: CallError) -> None:
    post = CallRequest("POST", "/orders", idempotent=False)
    assert retryable(error, post) is unprocessed(error)
