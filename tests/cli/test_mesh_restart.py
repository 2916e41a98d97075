"""A single-instance backend restarted under load loses no call (issue 12.3).

A frontend cell process calls a backend cell process through the mesh; a client drives the
frontend at concurrency 32 (GETs, idempotent, and POSTs, not) while the backend is stopped
with SIGTERM and started again — once on the same port, once on a new one — under the same
local:// registry.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from ..conftest import Cli, start_cli

pytestmark = pytest.mark.slow

CELLS = """
import os
from pydantic import BaseModel
from orchestro import HTTPError, TransportError, cell, mesh, service

class Order(BaseModel):
    n: int

@cell("backend", port=0)
class Backend:
    @service.get("/who")
    async def who(self) -> int:
        return os.getpid()

    @service.post("/orders")
    async def order(self, order: Order) -> int:
        return order.n

@cell("frontend", port=0)
class Frontend:
    backend = mesh.client(Backend)

    @service.get("/who")
    async def who(self) -> int:
        return await self.backend.who()

    @service.post("/orders")
    async def order(self, order: Order) -> int:
        try:
            return await self.backend.order(order)
        except TransportError as exc:
            if "reset by peer" in str(exc) or "Server disconnected" in str(exc):
                # Sent whole on a pooled connection the draining backend closed at that
                # moment: it may have been processed for all the client can tell, so a
                # POST is not sent again (Go's client doesn't either).
                raise HTTPError(502, "ambiguous") from exc
            raise
"""


async def start_backend(cells: Path, registry: str, port: int) -> tuple[Cli, int]:
    backend = await start_cli(
        "run", str(cells), "--cell", "backend", "--port", str(port),
        "--registry", registry, "--registry-ttl", "2",
    )  # fmt: skip
    url = (await backend.wait_serving())["backend"]
    return backend, int(url.rsplit(":", 1)[1])


async def test_restarting_the_only_backend_under_load_fails_no_call(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    cells = tmp_path / "cells.py"
    cells.write_text(textwrap.dedent(CELLS))
    registry = f"local://{tmp_path}/registry.db"
    backend, port = await start_backend(cells, registry, 0)
    cli_processes.append(backend)
    # "Ready within the deadline" on a loaded 2-core machine: a restart can take 10 s there,
    # so the deadline and the wait bound are raised beyond it (defaults: 15 s and 10 s).
    patient = {"ORCHESTRO_MESH_TIMEOUT": "60", "ORCHESTRO_MESH_WAIT_FOR_INSTANCES": "50"}
    frontend = await start_cli(
        "run", str(cells), "--cell", "frontend", "--registry", registry, "--registry-ttl", "2",
        env=patient,
    )  # fmt: skip
    cli_processes.append(frontend)
    url = (await frontend.wait_serving())["frontend"]

    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    pids: Counter[int] = Counter()
    stop = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # The frontend's view sees the backend within a poll or two.
        async with asyncio.timeout(30):
            while True:
                async with session.get(f"{url}/who") as response:
                    if response.status == 200:
                        break

        async def worker(n: int) -> None:
            post = n % 2 == 1
            while not stop.is_set():
                try:
                    if post:
                        async with session.post(f"{url}/orders", json={"n": n}) as response:
                            body = await response.read()
                    else:
                        async with session.get(f"{url}/who") as response:
                            body = await response.read()
                            if response.status == 200:
                                pids[int(body)] += 1
                    kind = "POST" if post else "GET"
                    statuses[kind, response.status] += 1
                    if response.status != 200:
                        failures.append(f"{kind} {response.status} {body[:300]!r}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(f"client: {exc!r}")

        workers = [asyncio.create_task(worker(n)) for n in range(32)]
        try:
            await asyncio.sleep(1.0)
            # Restart on the same port, then on a new one (port 0).
            for next_port in (port, 0):
                backend.signal(signal.SIGTERM)
                await backend.exits_with(0)
                backend, _ = await start_backend(cells, registry, next_port)
                cli_processes.append(backend)
                await asyncio.sleep(1.5)  # served by the new instance for a while
        finally:
            stop.set()
            await asyncio.gather(*workers)

    frontend.signal()
    await frontend.exits_with(0)
    print(f"answers: {dict(statuses)}; failures: {len(failures)}")
    # A POST sent whole just as the backend's drain closed its idle keep-alive connection is
    # the one ambiguous case (the drain's to prevent: issue 12.2); nothing else may fail —
    # no GET, and no POST refused before it was processed.
    ambiguous = [f for f in failures if f.startswith("POST 502") and "ambiguous" in f]
    assert [f for f in failures if f not in ambiguous] == [], failures[:5]
    assert len(ambiguous) <= statuses["POST", 200] // 20
    assert statuses["GET", 200] > 0
    assert statuses["POST", 200] > 0
    assert len(pids) == 3  # all three backend processes answered
