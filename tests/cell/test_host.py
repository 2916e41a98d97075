"""A cell's lifecycle: listen, on_start, serve, drain, on_stop — and readiness throughout."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from orchestro import StartupError, cell, service
from orchestro.host import CellHost, CellState
from orchestro.testing import CellClient, make_cell


@cell("lifecycle")
class Lifecycle:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.release = asyncio.Event()
        self.block_start = False

    async def on_start(self) -> None:
        self.events.append("start")
        if self.block_start:
            await self.release.wait()

    async def on_stop(self) -> None:
        self.events.append("stop")

    @service.get("/work")
    async def work(self, seconds: float = 0.0) -> str:
        await asyncio.sleep(seconds)
        self.events.append("work")
        return "done"


@cell("broken-start")
class BrokenStart:
    stopped = False

    async def on_start(self) -> None:
        raise ValueError("no database")

    async def on_stop(self) -> None:
        BrokenStart.stopped = True


@cell("broken-init")
class BrokenInit:
    def __init__(self) -> None:
        raise RuntimeError("bad config")


async def test_hooks_run_in_order() -> None:
    instance = make_cell(Lifecycle)
    async with CellClient(instance) as client:
        assert client.host.state is CellState.SERVING
        assert (await client.get("/work")).json() == "done"
    assert instance.events == ["start", "work", "stop"]
    assert client.host.state is CellState.STOPPED


async def test_readiness_follows_the_lifecycle() -> None:
    instance = make_cell(Lifecycle, block_start=True)
    host = CellHost(instance, host="127.0.0.1", port=0)
    starting = asyncio.create_task(host.start())
    async with aiohttp.ClientSession() as session:
        while host.state is not CellState.STARTING or not host.port:
            await asyncio.sleep(0.01)
        async with session.get(f"{host.url}/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok", "cell": "lifecycle"})
        async with session.get(f"{host.url}/readyz") as r:
            assert r.status == 503
            assert r.content_type == "application/problem+json"
            assert (await r.json())["detail"] == "cell 'lifecycle' is starting"
        async with session.get(f"{host.url}/work") as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
        instance.release.set()
        await starting
        async with session.get(f"{host.url}/readyz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ready", "cell": "lifecycle"})
        await host.drain()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{host.url}/healthz"):
                pass


async def test_drain_finishes_requests_in_flight_and_refuses_new_ones() -> None:
    instance = make_cell(Lifecycle)
    host = CellHost(instance, host="127.0.0.1", port=0)
    await host.start()
    async with aiohttp.ClientSession() as session:

        async def slow() -> tuple[int, Any]:
            async with session.get(f"{host.url}/work", params={"seconds": "0.5"}) as r:
                return r.status, await r.json()

        in_flight = [asyncio.create_task(slow()) for _ in range(5)]
        while host.gate.in_flight < 5:
            await asyncio.sleep(0.01)
        draining = asyncio.create_task(host.drain())
        await asyncio.sleep(0.05)
        assert host.state is CellState.DRAINING
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", host.port)
        assert await asyncio.gather(*in_flight) == [(200, "done")] * 5
        await draining
    assert instance.events == ["start", *["work"] * 5, "stop"]
    assert host.state is CellState.STOPPED


async def test_drain_cancels_requests_past_the_drain_timeout() -> None:
    from orchestro.config import GatewaySettings

    instance = make_cell(Lifecycle)
    host = CellHost(instance, host="127.0.0.1", port=0, settings=GatewaySettings(drain_timeout=0.2))
    await host.start()
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"{host.url}/work", params={"seconds": "30"}))
        while host.gate.in_flight < 1:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(host.drain(), timeout=10)
        with pytest.raises(aiohttp.ClientError):
            await request
    assert "work" not in instance.events
    assert instance.events[-1] == "stop"


async def test_on_start_failure_is_a_startup_error_that_names_it() -> None:
    host = CellHost(BrokenStart, host="127.0.0.1", port=0)
    with pytest.raises(StartupError) as info:
        await host.start()
    message = str(info.value)
    assert message.startswith(
        "cell 'broken-start' failed to start: on_start raised ValueError: no database (at "
    )
    assert "test_host.py:" in message
    assert host.state is CellState.STOPPED
    assert BrokenStart.stopped is False  # on_stop runs only after a successful on_start
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", host.port)


async def test_constructor_failure_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"cannot create cell 'broken-init': BrokenInit\(\)"):
        await CellHost(BrokenInit, port=0).start()


async def test_port_in_use_is_a_startup_error_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = CellHost(Lifecycle, host="127.0.0.1", port=port)
        with pytest.raises(StartupError) as info:
            await host.start()
    assert str(info.value) == (
        f"cannot start cell 'lifecycle': port {port} on 127.0.0.1 is in use; stop the process "
        "using it, or choose another port with --port or @cell(port=...) (0 picks a free one)"
    )


async def test_a_host_starts_once_and_drains_idempotently() -> None:
    host = CellHost(Lifecycle, host="127.0.0.1", port=0)
    await host.start()
    with pytest.raises(RuntimeError, match="already started"):
        await host.start()
    await host.drain()
    await host.drain()
    with pytest.raises(RuntimeError, match="already started"):
        await host.start()


async def test_draining_a_host_that_never_started() -> None:
    host = CellHost(Lifecycle)
    await host.drain()
    assert host.state is CellState.STOPPED
    with pytest.raises(RuntimeError, match="has not been created"):
        _ = host.instance
