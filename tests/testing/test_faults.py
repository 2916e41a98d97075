"""Fault injection and mock transports, as a user tests a cell that calls others."""

from __future__ import annotations

# --8<-- [start:faults]
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from examples.frontend import Frontend
from examples.hello import Greeter

from orchestro import CallPolicy, Mesh
from orchestro.testing import CellClient, FaultInjector, MockTransport


@pytest_asyncio.fixture  # (a plain @pytest.fixture needs asyncio_mode = auto)
async def greeter() -> AsyncIterator[CellClient]:
    async with CellClient(Greeter) as running:  # the real greeter, on a loopback port
        yield running


async def test_frontend_survives_a_flaky_greeter(cell_client, greeter: CellClient) -> None:
    faults = FaultInjector()
    async with Mesh(f"static://greeter={greeter.url}", transport=faults) as calls:
        frontend = await cell_client(Frontend, mesh=calls)

        faults.error_rate(0.3, status=503, cell="greeter")  # retried: callers never notice
        for _ in range(20):
            assert (await frontend.get("/hello/Ada")).status == 200
        assert faults.injected > 0

        faults.clear()
        faults.abort_with(500, cell="greeter")  # a real failure reaches the frontend's handler
        response = await frontend.get("/hello/Ada")
        assert response.status == 502
        assert response.json()["detail"] == "the greeter answered 500"


async def test_frontend_with_a_mocked_greeter(cell_client) -> None:
    mock = MockTransport(lambda instance, request: {"message": "Hello from a mock"})
    async with Mesh("static://greeter=http://greeter.invalid", transport=mock) as calls:
        frontend = await cell_client(Frontend, mesh=calls)
        response = await frontend.get("/hello/Ada")
    assert response.json() == {"message": "Hello from a mock"}
    assert [(r.method, r.path, r.operation) for r in mock.requests] == [("GET", "/greet", "greet")]
    assert mock.requests[0].query == [("name", "Ada")]


# --8<-- [end:faults]


async def test_injected_latency_spends_the_deadline(greeter: CellClient) -> None:
    faults = FaultInjector().latency(1.0, cell="greeter", operation="greet")
    policy = CallPolicy(timeout=0.1, max_attempts=1)
    async with Mesh(f"static://greeter={greeter.url}", transport=faults, policy=policy) as calls:
        from orchestro import DeadlineExceeded

        with pytest.raises(DeadlineExceeded):
            await calls.client(Greeter).greet(name="x")


async def test_disconnections_are_retried_elsewhere() -> None:
    seen: list[str] = []

    def answer(instance, request):  # type: ignore[no-untyped-def]
        seen.append(instance.url)
        return {"message": instance.url}

    faults = FaultInjector(MockTransport(answer))
    faults.disconnect(url="http://a.invalid:1")  # one instance is gone
    registry = "static://greeter=http://a.invalid:1,greeter=http://b.invalid:2"
    async with Mesh(registry, transport=faults) as calls:
        for _ in range(20):
            assert (await calls.client(Greeter).greet()).message.startswith("http://")
    assert faults.injected > 0  # a.invalid was tried, and every such call moved on to b
    assert seen == ["http://b.invalid:2"] * 20
