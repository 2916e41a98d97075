"""A black-holed or hung instance costs one attempt timeout, not the call: real sockets on
loopback (an instance that accepts and never answers; a listener whose accept queue is full,
so the kernel drops SYNs as a partition does), the real HTTP transport.

No timing thresholds: each test gives the call a deadline that, without the mechanism under
test, it would certainly miss (the hung instance never answers), and asserts outcomes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from orchestro import CallPolicy, DeadlineExceeded, Mesh
from orchestro.mesh.breaker import OutlierDetector
from orchestro.mesh.target import AttemptTimer, Target
from orchestro.mesh.transports.base import CallRequest
from orchestro.registry import Instance, RegistryView
from orchestro.registry.memory import MemoryRegistry
from orchestro.testing import FakeClock


def instance(n: int, port: int) -> Instance:
    return Instance(cell="backend", id=f"backend-{n}", host="127.0.0.1", port=port)


@pytest.fixture
async def healthy() -> AsyncIterator[tuple[int, list[str]]]:
    """An instance that answers every request; yields its port and the methods it served."""
    served: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        served.append(request.method)
        return web.json_response("ok")

    app = web.Application()
    app.router.add_route("*", "/work", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, served
    await runner.cleanup()


@pytest.fixture
async def hung() -> AsyncIterator[tuple[int, list[int]]]:
    """An instance that accepts connections, reads requests and never answers (a process
    stopped with SIGSTOP, or a partition after the handshake); yields its port and the
    requests it swallowed (bytes read per connection)."""
    swallowed: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        data = await reader.read(65536)
        swallowed.append(len(data))
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], swallowed
    for writer in writers:
        writer.close()
    server.close()


@pytest.fixture
def dropping() -> AsyncIterator[int]:
    """A port whose SYNs the kernel drops: a listener that never accepts, its accept queue
    filled (listen(0) holds one), as a host behind a partition looks to a new connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    probe = socket.socket()
    probe.settimeout(0.3)
    with pytest.raises(TimeoutError):
        probe.connect(("127.0.0.1", port))  # the fault is in effect, or the test is void
    probe.close()
    yield port  # type: ignore[misc]
    filler.close()
    listener.close()


async def warmed_mesh(registry: MemoryRegistry, policy: CallPolicy) -> tuple[Mesh, RegistryView]:
    view = RegistryView(registry)
    mesh = Mesh(view, policy=policy, telemetry=False)
    await mesh.start()
    return mesh, view


async def test_calls_in_flight_to_a_hung_instance_are_retried_on_another(
    healthy: tuple[int, list[str]], hung: tuple[int, list[int]]
) -> None:
    registry = MemoryRegistry()
    await registry.register(instance(1, healthy[0]))
    # Whole-call timeout 5 s: without an attempt timeout every call sent to the hung
    # instance fails at that deadline; with it (floor 0.2 s) each is retried in time.
    policy = CallPolicy(timeout=5.0, attempt_timeout_min=0.2)
    mesh, view = await warmed_mesh(registry, policy)
    try:
        for _ in range(20):  # latency samples for the attempt timer, from the healthy one
            await mesh.call("backend", CallRequest("GET", "/work"))
        await registry.register(instance(2, hung[0]))
        await asyncio.wait_for(view.wait_for(lambda v: len(v.ready("backend")) == 2), 10)
        calls = [mesh.call("backend", CallRequest("GET", "/work")) for _ in range(40)]
        answers = await asyncio.gather(*calls)
        target = mesh.target_state("backend")
        assert target is not None
        assert [a.status for a in answers] == [200] * 40
        assert hung[1], "no request reached the hung instance: the test proved nothing"
        # It failed five times in a row (timed out attempts count) and is ejected.
        assert target.detector.state("backend-2") == "open"
        assert len(healthy[1]) == 20 + 40
        # No answer is no latency: the balancer's cost of the hung instance is untouched by
        # its abandoned attempts (else it would shun the instance long after it recovers).
        assert target.stats["backend-2"].ewma == 0.0
    finally:
        await mesh.aclose()
        await view.aclose()


async def test_a_post_is_not_abandoned_by_the_attempt_timeout(
    healthy: tuple[int, list[str]], hung: tuple[int, list[int]]
) -> None:
    """Only idempotent attempts are abandoned: a POST the hung instance may be processing is
    never sent a second time — it waits for the call's own deadline."""
    registry = MemoryRegistry()
    await registry.register(instance(2, hung[0]))
    policy = CallPolicy(timeout=1.0, attempt_timeout=0.1, max_attempts=3)
    mesh, view = await warmed_mesh(registry, policy)
    try:
        with pytest.raises(DeadlineExceeded):
            await mesh.call("backend", CallRequest("POST", "/work", body=b"{}", idempotent=False))
        assert len(hung[1]) == 1  # sent once, never resent
    finally:
        await mesh.aclose()
        await view.aclose()


async def test_a_connect_into_a_partition_times_out_and_even_a_post_goes_elsewhere(
    healthy: tuple[int, list[str]], dropping: int
) -> None:
    registry = MemoryRegistry()
    await registry.register(instance(1, healthy[0]))
    await registry.register(instance(3, dropping))
    # A POST is resent only when it was certainly not processed: a connect that timed out.
    policy = CallPolicy(timeout=5.0, connect_timeout=0.2, balancer="round-robin")
    mesh, view = await warmed_mesh(registry, policy)
    try:
        answers = [
            await mesh.call("backend", CallRequest("POST", "/work", body=b"{}", idempotent=False))
            for _ in range(4)
        ]
        assert [a.status for a in answers] == [200] * 4
        target = mesh.target_state("backend")
        assert target is not None
        # Both were tried: the detector holds an outcome of each (the dropping one's failed).
        assert target.detector.tracked() == 2, "no attempt went to the dropping port"
        assert healthy[1] == ["POST"] * 4  # each processed exactly once
    finally:
        await mesh.aclose()
        await view.aclose()


@pytest.fixture
async def slow() -> AsyncIterator[tuple[int, list[str]]]:
    """An instance that answers every request after 0.5 s."""
    served: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        served.append(request.method)
        await asyncio.sleep(0.5)
        return web.json_response("slow")

    app = web.Application()
    app.router.add_get("/report", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], served  # type: ignore[union-attr]
    await runner.cleanup()


async def test_the_last_attempt_is_never_abandoned(slow: tuple[int, list[str]]) -> None:
    """A slow answer beats none: the last attempt allowed waits for the call's deadline."""
    registry = MemoryRegistry()
    await registry.register(instance(1, slow[0]))
    policy = CallPolicy(timeout=5.0, attempt_timeout=0.1, max_attempts=2)
    mesh, view = await warmed_mesh(registry, policy)
    try:
        answer = await mesh.call("backend", CallRequest("GET", "/report"))
        assert answer.status == 200
        assert slow[1] == ["GET", "GET"]  # the first abandoned, the second (last) answered
    finally:
        await mesh.aclose()
        await view.aclose()


def test_each_operation_has_its_own_attempt_timer() -> None:
    target = Target(CallPolicy(), FakeClock())
    fast = CallRequest("GET", "/health", operation="health")
    report = CallRequest("GET", "/report", operation="report")
    assert target.attempt_timeout(fast) is None  # no answer yet: no attempt timeout
    for _ in range(50):
        target.timer(fast).observe(0.001)
        target.timer(report).observe(4.0)
    assert target.attempt_timeout(fast) == 1.0  # the floor
    assert target.attempt_timeout(report) == pytest.approx(4.0, rel=0.05)  # its own latency


def test_the_attempt_timer_follows_rfc_6298() -> None:
    timer = AttemptTimer()
    assert timer.timeout(1.0) is None  # no sample: the call's own timeout
    timer.observe(0.4)
    assert timer.srtt == pytest.approx(0.4)
    assert timer.rttvar == pytest.approx(0.2)
    assert timer.timeout(0.1) == pytest.approx(0.4 + 4 * 0.2)
    timer.observe(0.8)  # RTTVAR first (from the old SRTT), then SRTT
    assert timer.rttvar == pytest.approx(0.75 * 0.2 + 0.25 * 0.4)
    assert timer.srtt == pytest.approx(0.875 * 0.4 + 0.125 * 0.8)
    for _ in range(200):
        timer.observe(0.002)
    assert timer.timeout(1.0) == 1.0  # fast answers: the floor


def test_an_ejected_instance_that_answers_its_probe_starts_with_a_clean_latency() -> None:
    clock = FakeClock()
    target = Target(CallPolicy(), clock)
    peers = ["a", "b", "c"]
    stats = target.stat("a")
    for _ in range(5):
        stats.observe(1.0, clock.now())  # timed-out attempts: a 1 s peak
        target.detector.record("a", False, peers)
    assert target.detector.state("a") == "open"
    clock.advance(30.0)
    assert target.detector.state("a") == "half-open"
    target.detector.on_pick("a")
    target.detector.record("a", True, peers)
    assert target.detector.state("a") == "closed"
    assert stats.ewma == 0.0  # not 1 s decaying over tens of seconds: it competes at once


def test_restore_is_told_only_after_an_ejection() -> None:
    detector = OutlierDetector(consecutive_failures=2, clock=FakeClock())
    told: list[str] = []
    detector.on_restore = told.append
    detector.record("a", False, ["a", "b", "c"])
    detector.record("a", True, ["a", "b", "c"])  # one failure, no ejection
    assert told == []
