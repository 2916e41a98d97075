"""Mesh resilience under faults, with real processes on loopback.

    python bench/resilience.py [--seconds 4]

1. Retry amplification: a backend that answers 503 to everything; idempotent calls at
   concurrency 32 for N seconds. Prints requests that reached the backend / calls made
   (target <= 1.2, plus the budget's 10 retries a second).
2. Failover: three backend processes, calls at concurrency 32; one backend is killed with
   SIGKILL mid-run. Prints failed calls (target 0) and the p50/p99 latency before and during
   the event (the second after the kill).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from orchestro import CallError, Mesh  # noqa: E402
from servers import free_port  # noqa: E402

BACKEND = """
import os
from orchestro import HTTPError, cell, service

COUNT = os.environ["BACKEND_COUNT"]
FAIL = os.environ.get("BACKEND_FAIL") == "1"

@cell("backend", port=0)
class Backend:
    def __init__(self) -> None:
        self.seen = 0

    @service.get("/work")
    async def work(self) -> int:
        self.seen += 1
        if self.seen % 50 == 0:
            with open(COUNT, "w") as f:
                f.write(str(self.seen))
        if FAIL:
            raise HTTPError(503, "always failing")
        return os.getpid()

    async def on_stop(self) -> None:
        with open(COUNT, "w") as f:
            f.write(str(self.seen))
"""


def start(tmp: Path, n: int, registry: str, fail: bool) -> tuple[subprocess.Popen[bytes], Path]:
    count = tmp / f"count-{n}"
    port = free_port()
    env = {**os.environ, "BACKEND_COUNT": str(count), "BACKEND_FAIL": "1" if fail else "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestro", "run", str(tmp / "backend.py"), "--port", str(port),
         "--registry", registry, "--registry-ttl", "2", "--log-level", "error"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, count
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a backend did not start")


async def load(
    calls: Mesh, seconds: float, on_tick: object = None
) -> list[tuple[float, float, bool]]:
    raw = calls.client("backend")
    samples: list[tuple[float, float, bool]] = []  # (start, latency, ok)
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                await raw.get("/work")
                ok = True
            except CallError:
                ok = False
            samples.append((started, time.monotonic() - started, ok))

    await asyncio.gather(*(worker() for _ in range(32)))
    return samples


async def connect(registry: str, count: int) -> Mesh:
    calls = Mesh(registry)
    await calls.start()
    async with asyncio.timeout(20):
        await calls.view.wait_for(lambda v: len(v.ready("backend")) == count)
    return calls


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def amplification(tmp: Path, seconds: float) -> None:
    registry = f"local://{tmp}/amp.db"
    proc, count = start(tmp, 0, registry, fail=True)
    try:
        calls = await connect(registry, 1)
        samples = await load(calls, seconds)
        await calls.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    reached = int(count.read_text())
    made = len(samples)
    allowance = 10 * max(10.0, seconds)  # the budget's minimum: 10/s, over its 10 s window
    print(f"retry amplification, backend failing 100%, {seconds:.0f} s at concurrency 32:")
    print(
        f"  calls {made}, requests reaching the backend {reached}: {reached / made:.3f}x "
        f"(target <= 1.2x + {allowance:.0f} budget minimum -> <= "
        f"{(1.2 * made + allowance) / made:.3f}x here)"
    )


async def failover(tmp: Path, seconds: float) -> None:
    registry = f"local://{tmp}/failover.db"
    procs = [start(tmp, n, registry, fail=False)[0] for n in range(1, 4)]
    try:
        calls = await connect(registry, 3)
        killed_at = 0.0

        async def kill_later() -> None:
            nonlocal killed_at
            await asyncio.sleep(seconds / 2)
            killed_at = time.monotonic()
            procs[0].send_signal(signal.SIGKILL)

        killer = asyncio.create_task(kill_later())
        samples = await load(calls, seconds)
        await killer
        await calls.aclose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    failed = sum(1 for _, _, ok in samples if not ok)
    before = [lat for start_, lat, _ in samples if start_ < killed_at]
    during = [lat for start_, lat, _ in samples if killed_at <= start_ < killed_at + 1]
    print("failover, SIGKILL of 1 of 3 backends under load at concurrency 32:")
    print(f"  calls {len(samples)}, failed {failed} (target 0)")
    print(f"  before: p50 {pct(before, 0.5):.1f} ms p99 {pct(before, 0.99):.1f} ms; "
          f"the second after the kill: p50 {pct(during, 0.5):.1f} ms "
          f"p99 {pct(during, 0.99):.1f} ms")  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "backend.py").write_text(textwrap.dedent(BACKEND))
        await amplification(tmp, args.seconds)
        await failover(tmp, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
