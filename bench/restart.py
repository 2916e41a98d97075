"""Failed calls while the only backend instance restarts under load.

A frontend cell process calls a backend cell process through the mesh (local:// registry in
a temp dir); a client drives the frontend at concurrency 32 (half GET, idempotent; half POST,
not) while the backend gets SIGTERM and is started again, ``--restarts`` times (alternately
on the same port and on a new one). Prints the calls and the failures, for this tree and,
with ``--baseline REV``, for the source of that git revision (``git archive``, run through
PYTHONPATH): the old behaviour beside the new.

    python bench/restart.py                      # this tree
    python bench/restart.py --baseline 0b76bd9   # and the tree before the restart work
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"cell (\S+) serving on (http://\S+)")

CELLS = """
import os
from pydantic import BaseModel
from orchestro import cell, mesh, service

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
        return await self.backend.order(order)
"""


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def url(self, cell: str) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"exited early: {self.log.read_text()[-2000:]}")
                if (found := URL.search(line)) and found.group(1) == cell:
                    # Keep reading stdout so the process never blocks on a full pipe.
                    asyncio.get_running_loop().create_task(self._drain())
                    return found.group(2)

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        while await self.proc.stdout.read(65536):
            pass


async def start(cells: Path, env: dict[str, str], *args: str) -> Process:
    fd, name = tempfile.mkstemp(prefix="orchestro-bench-", suffix=".log")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestro", "run", str(cells), *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=fd,
        )  # fmt: skip
    finally:
        os.close(fd)
    return Process(proc, Path(name))


async def scenario(source: Path | None, restarts: int, concurrency: int) -> Counter[str]:
    work = Path(tempfile.mkdtemp(prefix="orchestro-restart-"))
    cells = work / "cells.py"
    cells.write_text(textwrap.dedent(CELLS))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(work)}
    env.pop("ORCHESTRO_REGISTRY", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    common = ("--registry", f"local://{work}/registry.db", "--registry-ttl", "2")
    started: list[Process] = []

    async def backend(port: int) -> tuple[Process, int]:
        found = await start(cells, env, "--cell", "backend", "--port", str(port), *common)
        started.append(found)
        return found, int((await found.url("backend")).rsplit(":", 1)[1])

    counts: Counter[str] = Counter()
    failures: list[str] = []
    try:
        current, port = await backend(0)
        front = await start(cells, env, "--cell", "frontend", *common)
        started.append(front)
        url = await front.url("frontend")
        stop = asyncio.Event()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async with asyncio.timeout(30):
                while True:
                    async with session.get(f"{url}/who") as response:
                        if response.status == 200:
                            break

            async def worker(n: int) -> None:
                kind = "POST" if n % 2 else "GET"
                while not stop.is_set():
                    try:
                        if kind == "POST":
                            request = session.post(f"{url}/orders", json={"n": n})
                        else:
                            request = session.get(f"{url}/who")
                        async with request as response:
                            body = await response.read()
                            ok = response.status == 200
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        ok, body = False, repr(exc).encode()
                    counts[f"{kind} calls"] += 1
                    if not ok:
                        counts[f"{kind} failed"] += 1
                        if len(failures) < 5:
                            failures.append(f"{kind}: {body[:400]!r}")

            workers = [asyncio.create_task(worker(n)) for n in range(concurrency)]
            await asyncio.sleep(1.0)
            for n in range(restarts):
                current.proc.send_signal(signal.SIGTERM)
                await current.proc.wait()
                current, _ = await backend(port if n % 2 == 0 else 0)
                await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        for process in started:
            if process.proc.returncode is None:
                process.proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(30):
                        await process.proc.wait()
                except TimeoutError:
                    process.proc.kill()
                    await process.proc.wait()
    for failure in failures:
        print("  e.g.", failure)
    return counts


def export(revision: str) -> Path:
    """The ``src`` directory of ``revision``, exported to a temp dir."""
    target = Path(tempfile.mkdtemp(prefix="orchestro-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def report(name: str, counts: Counter[str]) -> None:
    print(
        f"{name:>10}: GET {counts['GET failed']} failed of {counts['GET calls']}, "
        f"POST {counts['POST failed']} failed of {counts['POST calls']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline", help="a git revision to compare with")
    args = parser.parse_args()
    if args.baseline:
        report(args.baseline, asyncio.run(scenario(export(args.baseline), args.restarts, 32)))
    report("this tree", asyncio.run(scenario(None, args.restarts, args.concurrency)))


if __name__ == "__main__":
    main()
