"""Drains that lose nothing on keep-alive connections, from the outside: a controller's
replicas drained (a restart), scaled down (``orchestro scale``) and rolled (SIGHUP) while 32
keep-alive clients loop GETs on the public port; a client that is answered
``Connection: close`` opens a new connection. Every request must succeed. And the
controller's output never blocks it: with its stdout a pipe nobody reads, its replicas stay
healthy through 2000 requests with the access log on."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..cli.test_lifecycle import ADMIN, SERVING, Started
from ..conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

CONCURRENCY = 32


class Load:
    """32 workers looping GETs over one keep-alive session (connector limit 32)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.closes = 0  # answers that said Connection: close
        self.failures: list[str] = []
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(CONCURRENCY)]

    async def _loop(self) -> None:
        while True:
            try:
                async with self._session.get(f"{self.url}/greet") as response:
                    await response.read()
                    if response.status != 200:
                        self.failures.append(f"status {response.status}")
                    else:
                        self.ok += 1
                    if response.headers.get("Connection", "").lower() == "close":
                        self.closes += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    async def served(self, more: int, timeout: float = 60.0) -> None:
        target = self.ok + more
        async with asyncio.timeout(timeout):
            while self.ok < target:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()


async def _cells(session: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/cells") as response:
        (group,) = await response.json()
    return dict(group)


async def _settled(session: aiohttp.ClientSession, admin: str, count: int) -> bool:
    group = await _cells(session, admin)
    return bool(group["ready"] == count == group["actual"] == len(group["replicas"]))


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def test_drain_scale_down_and_roll_under_keep_alive_load_lose_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "orchestro.toml").write_text("[scaling.cells.greeter]\nmin = 3\nmax = 3\n")
    started = await Started.start(
        "run", str(ROOT / "examples" / "hello.py"), "--port", "0", cwd=tmp_path
    )
    load: Load | None = None
    try:
        url = (await started.wait_for(SERVING)).group(2)
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession() as session:
            await _until(lambda: _settled(session, admin, 3))
            load = Load(url)
            await load.served(500)
            # 1. A drain: one replica restarted.
            first = (await _cells(session, admin))["replicas"][0]
            restart = f"{admin}/cells/greeter/replicas/{first['index']}/restart"
            async with session.post(restart) as response:
                assert response.status == 200
            await _until(lambda: _replaced(session, admin, first["pid"], 3))
            await load.served(500)
            # 2. A scale-down (the config's bounds 3..3 are widened by the CLI for a cell
            # that does not auto-scale).
            before = sorted(r["index"] for r in (await _cells(session, admin))["replicas"])
            code, _, err = await run_cli("scale", "greeter", "2", "--admin", admin)
            assert code == 0, err
            await _until(lambda: _settled(session, admin, 2))
            after = sorted(r["index"] for r in (await _cells(session, admin))["replicas"])
            assert after == before[:2]  # the newest (the replacement of step 1) was drained
            await load.served(500)
            # 3. A rolling restart.
            old = {r["pid"] for r in (await _cells(session, admin))["replicas"]}
            started.send(signal.SIGHUP, group=False)
            await _until(lambda: _rolled(session, admin, old, 2))
            await load.served(500)
            await load.stop()
            failures, ok, closes = load.failures, load.ok, load.closes
            load = None
        print(
            f"keep-alive load at c={CONCURRENCY}: {ok} ok, {len(failures)} failed, "
            f"{closes} answers with Connection: close"
        )
        assert failures == []
        assert closes > 0  # the drains told the clients
    finally:
        if load is not None:
            await load.stop()
        started.send(signal.SIGTERM, group=False)
        try:
            assert await started.wait(timeout=60) == 0
        finally:
            started.kill()


async def _replaced(session: aiohttp.ClientSession, admin: str, pid: int, count: int) -> bool:
    group = await _cells(session, admin)
    pids = {r["pid"] for r in group["replicas"] if r["state"] == "ready"}
    return len(pids) == count == len(group["replicas"]) and pid not in pids


async def _rolled(session: aiohttp.ClientSession, admin: str, old: set[int], count: int) -> bool:
    group = await _cells(session, admin)
    pids = {r["pid"] for r in group["replicas"] if r["state"] == "ready"}
    return len(pids) == count == len(group["replicas"]) and not pids & old


CHATTY = """
from orchestro import cell, service

@cell("greeter", port=0)
class Chatty:
    @service.get("/greet")
    async def greet(self, name: str = "world") -> str:
        print(f"served {name}", flush=True)  # a replica's own output, relayed by the controller
        return name
"""


async def test_a_controller_whose_stdout_nobody_reads_keeps_its_replicas_healthy(
    tmp_path: Path,
) -> None:
    (tmp_path / "chatty.py").write_text(CHATTY)
    # stdout: a pipe this test reads only until the controller announced itself, then
    # never again (until the end): a pipe fills at ~64 KiB; 2000 lines of 200+ bytes are more.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestro",
        "run",
        "chatty.py",
        "--port",
        "0",
        "--replicas",
        "2",
        "--access-log",
        "true",  # the access log: stderr, a file here
        cwd=str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("wb"),
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        seen = b""
        async with asyncio.timeout(60):
            while not (SERVING.search(seen.decode()) and ADMIN.search(seen.decode())):
                seen += await proc.stdout.readline()
        url = SERVING.search(seen.decode()).group(2)  # type: ignore[union-attr]
        admin = ADMIN.search(seen.decode()).group(1)  # type: ignore[union-attr]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as session:
            await _until(lambda: _settled(session, admin, 2))

            async def worker(count: int) -> int:
                ok = 0
                for _ in range(count):
                    async with session.get(f"{url}/greet?name={'x' * 200}") as response:
                        await response.read()
                        ok += response.status == 200
                return ok

            served = sum(await asyncio.gather(*(worker(125) for _ in range(16))))
            assert served == 2000
            await asyncio.sleep(2.0)  # a few rounds of health pings with the pipe full
            group = await _cells(session, admin)
            async with session.get(f"{admin}/events") as response:
                kinds = [e["kind"] for e in await response.json()]
            async with session.get(f"{admin}/metrics") as response:
                page = await response.text()
        print(
            "dropped output lines:",
            [line for line in page.splitlines() if line.startswith("orchestro_controller_output")],
        )
        assert group["ready"] == 2, group
        assert "hung" not in kinds, kinds
        assert "health-changed" not in kinds, kinds
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = asyncio.create_task(proc.stdout.read())  # unblock it so that it can exit
        async with asyncio.timeout(60):
            code = await proc.wait()
        await rest
    assert code == 0


TO_ZERO = """
from orchestro import Scaling, cell, service

QUICK = Scaling(min=0, max=1, stable_window=2, scale_down_delay=0, tick=0.5)

@cell("sleepy", port=0, scaling=QUICK)
class Sleepy:
    @service.get("/hello")
    async def hello(self) -> str:
        return "awake"
"""


async def test_scale_to_zero_and_back_on_the_first_connection(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(TO_ZERO)
    started = await Started.start("run", "sleepy.py", cwd=tmp_path)
    try:
        url = (await started.wait_for(SERVING)).group(2)
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await _until(lambda: _settled(session, admin, 1))
            # Idle for a stable window (2 s): down to zero replicas.
            await _until(lambda: _settled(session, admin, 0))
            loop = asyncio.get_running_loop()
            began = loop.time()
            async with session.get(f"{url}/hello") as response:  # held, then served
                assert response.status == 200
                assert await response.json() == "awake"
            latency = loop.time() - began
            async with session.get(f"{admin}/events") as response:
                events = await response.json()
        sources = [e["data"].get("source") for e in events if e["kind"] == "scaled"]
        assert sources[:2] == ["autoscaler", "activator"], sources
        print(f"first request after scale to zero: {latency:.2f} s")
    finally:
        started.send(signal.SIGTERM, group=False)
        try:
            assert await started.wait(timeout=60) == 0
        finally:
            started.kill()
