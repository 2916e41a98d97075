"""Auto-scaling: how fast the controller scales up, whether it holds still, and whether
scale-down and restarts lose requests.

    python bench/autoscale.py [--steady 30]

Runs ``bench/slow_cell.py`` (each request awaits ~20 ms; 8 in flight per replica, 1..8
replicas) under the controller with the windows shortened by an ``orchestro.toml``
(stable window 10 s, panic window 2 s, tick 0.5 s, scale-down delay 10 s), and drives it
through its public port at fixed concurrency:

1. step from 4 to 64 requests in flight: time to the scale-up decision (target <= 2 s) and
   to the new replicas serving (target <= 3 s);
2. steady load for ``--steady`` seconds after settling: scale changes (target: none);
3. drop to 4: scale-down, and failed requests across the whole run (target: 0);
4. SIGKILL of one replica under load: time until its replacement serves (target <= 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[scaling.cells.slow]
stable_window = 10
panic_window = 0.2
tick = 0.5
scale_down_delay = 10
"""


class Load:
    """``concurrency`` clients looping on GET /work; counts answers and failures."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.ok = 0
        self.failed: list[str] = []  # the first 20 failures, with their time
        self.failures = 0
        self.tasks: list[asyncio.Task[None]] = []

    def set(self, concurrency: int) -> None:
        while len(self.tasks) < concurrency:
            self.tasks.append(asyncio.create_task(self._loop()))
        while len(self.tasks) > concurrency:
            self.tasks.pop().cancel()

    async def _loop(self) -> None:
        while True:
            try:
                async with self.session.get(f"{self.url}/work") as response:
                    await response.read()
                    if response.status == 200:
                        self.ok += 1
                    else:
                        body = (await response.read())[:160].decode(errors="replace")
                        self._fail(f"status {response.status}: {body}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(repr(exc))
                await asyncio.sleep(0.01)  # no busy loop against a refusing port

    def _fail(self, what: str) -> None:
        self.failures += 1
        if len(self.failed) < 20:
            self.failed.append(f"{time.strftime('%H:%M:%S')} {what}")

    async def stop(self) -> None:
        self.set(0)
        await asyncio.sleep(0.1)


async def events(session: aiohttp.ClientSession, admin: str, since: int = 0) -> list[Any]:
    async with session.get(f"{admin}/events", params={"since": str(since)}) as response:
        found: list[Any] = await response.json()
        return found


async def state(session: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/cells") as response:
        cells: dict[str, Any] = (await response.json())[0]
        return cells


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def wait_for(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)
    return time.monotonic() - start


async def main(steady: float) -> int:
    work = Path(tempfile.mkdtemp(prefix="orchestro-autoscale-"))
    (work / "orchestro.toml").write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestro", "run", str(ROOT / "bench" / "slow_cell.py"),
        "--log-level", "warning", "--access-log", "false",
        cwd=work, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    admin = url = ""
    while not (admin and url):
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise SystemExit("the controller did not start")
        if m := re.search(r"admin API on (\S+)", line):
            admin = m.group(1)
        if m := re.search(r"cell slow serving on (\S+)", line):
            url = m.group(1)
    drain = asyncio.create_task(_drain(proc.stdout))
    try:
        results = await measure(admin, url, steady)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        drain.cancel()
    print(json.dumps(results, indent=2))
    print(
        f"targets: decision <= 2 s ({results['scale-up decision (s)']}), serving <= 3 s "
        f"({results['new replicas serving (s)']}), no change when steady "
        f"({results[f'scale changes during {steady:g} s of steady load']}), 0 failed on "
        f"scale-down ({results['failed requests during scale-down']}), replacement <= 1 s "
        f"({results['SIGKILLed replica replaced and serving (s)']})"
    )
    return 0


async def measure(admin: str, url: str, steady: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        note(f"controller at {admin}, cell at {url}")
        await wait_for(lambda: _ready(session, admin, 1), 20)
        note("one replica ready; load 4")
        load = Load(session, url)
        load.set(4)
        await asyncio.sleep(12)  # settle at 1 replica
        seq = max((e["seq"] for e in await events(session, admin)), default=0)

        note(f"state before the step: {await state(session, admin)}")
        # 1. Step up.
        step = time.monotonic()
        load.set(64)

        async def scaled_up() -> bool:
            return any(e["kind"] == "scaled" for e in await events(session, admin, seq))

        decision = await wait_for(scaled_up, 30)
        first = next(e for e in await events(session, admin, seq) if e["kind"] == "scaled")
        target = first["data"]["desired"]
        await wait_for(lambda: _at_least(session, admin, target), 30)
        serving = time.monotonic() - step
        results["scale-up decision (s)"] = round(decision, 2)
        results["new replicas serving (s)"] = round(serving, 2)
        results["replicas after the step"] = target

        note(f"scaled to {target} in {decision:.2f} s, serving after {serving:.2f} s")
        # 2. Steady.
        await asyncio.sleep(25)  # panic ends a stable window after its last trigger
        seq = max(e["seq"] for e in await events(session, admin))
        settled = (await state(session, admin))["desired"]
        await asyncio.sleep(steady)
        changes = [e for e in await events(session, admin, seq) if e["kind"] == "scaled"]
        results["replicas while steady"] = settled
        results[f"scale changes during {steady:g} s of steady load"] = len(changes)

        note(f"steady: {len(changes)} changes")
        # 4. SIGKILL one replica under load.
        cell = await state(session, admin)
        victim = next(r for r in cell["replicas"] if r["state"] == "ready")
        known = {r["pid"] for r in cell["replicas"]}
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()

        async def replaced() -> bool:
            now = await state(session, admin)
            return any(r["state"] == "ready" and r["pid"] not in known for r in now["replicas"])

        await wait_for(replaced, 30)
        results["SIGKILLed replica replaced and serving (s)"] = round(time.monotonic() - killed, 2)
        failed_before_drop = load.failures

        note("replacement serving; dropping the load to 4")
        # 3. Drop.
        seq = max(e["seq"] for e in await events(session, admin))
        load.set(4)
        drop = time.monotonic()
        await wait_for(lambda: _ready(session, admin, 1), 120)
        results["scale-down to 1 replica (s)"] = round(time.monotonic() - drop, 2)
        await asyncio.sleep(2)
        await load.stop()
        results["requests answered"] = load.ok
        results["failed requests during scale-down"] = load.failures - failed_before_drop
        results["failed requests in the whole run"] = load.failures
        if load.failed:
            results["first failures"] = load.failed[:5]
    return results


async def _at_least(session: aiohttp.ClientSession, admin: str, count: int) -> bool:
    return bool((await state(session, admin))["ready"] >= count)


async def _ready(session: aiohttp.ClientSession, admin: str, count: int) -> bool:
    cell = await state(session, admin)
    return bool(cell["ready"] == count == cell["actual"])


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steady", type=float, default=30.0)
    sys.exit(asyncio.run(main(parser.parse_args().steady)))
