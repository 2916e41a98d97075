"""Compare gateway variants fairly on a noisy machine: several processes each, interleaved.

    python bench/compare.py [--copies 3] [--rounds 6] [--loop asyncio] VARIANT [VARIANT ...]

A VARIANT is ``bare`` (the bare aiohttp handler of ``bench/bare_aiohttp.py``) or
``[NAME=VALUE ...] [-- orchestro run options]`` for the hello cell, for example::

    python bench/compare.py bare "" "-- --metrics false" \\
        "PYTHONPATH=/tmp/variant/src" "OTEL_TRACES_SAMPLER=always_off"

One server process can run ~5% faster or slower than an identical one for its whole life
(memory layout), so a comparison of one process per variant cannot resolve a change of a
microsecond per request. This starts ``--copies`` processes per variant (server on core 0,
``wrk`` on core 1), then runs one-second ``wrk`` rounds over all of them in random order,
and prints per variant the median CPU time per request (from ``/proc``) and the median
requests/s as a ratio to the first variant. Needs wrk (Debian: wrk) and Linux.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, free_port, pin, wrk  # noqa: E402


def start(variant: str, port: int, loop: str) -> subprocess.Popen[bytes]:
    settings, _, options = variant.partition("--")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(item.split("=", 1) for item in settings.split() if "=" in item)
    if settings.strip() == "bare":
        cmd = [sys.executable, str(ROOT / "bench" / "bare_aiohttp.py"), "--port", str(port)]
        cmd += ["--loop", loop]
    else:
        cmd = [sys.executable, "-m", "orchestro", "run", "examples/hello.py"]
        cmd += ["--port", str(port), "--registry", "memory://", "--log-level", "warning"]
        cmd += ["--loop", loop]
        cmd += options.split()
    return subprocess.Popen(
        [*pin(0), *cmd],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_serving(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("taskset")):
        print("bench/compare.py needs wrk and taskset: apt-get install wrk", file=sys.stderr)
        return 2
    slots = [(v, free_port()) for _ in range(args.copies) for v in range(len(args.variants))]
    procs = [start(args.variants[v], port, args.loop) for v, port in slots]
    results: list[list[tuple[float, int]]] = [[] for _ in args.variants]
    try:
        for _, port in slots:
            wait_serving(port)
            wrk(f"http://127.0.0.1:{port}/greet")  # warm-up
        for _ in range(args.rounds):
            order = list(range(len(slots)))
            random.shuffle(order)
            for i in order:
                variant, port = slots[i]
                before = cpu_seconds(procs[i].pid)
                served = wrk(f"http://127.0.0.1:{port}/greet").requests
                used = cpu_seconds(procs[i].pid) - before
                results[variant].append((used * 1e6 / served, served))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    base = statistics.median(n for _, n in results[0])
    for variant, runs in zip(args.variants, results, strict=True):
        cpu = statistics.median(c for c, _ in runs)
        rate = statistics.median(n for _, n in runs)
        print(
            f"{variant or '(default)':50} cpu {cpu:6.1f} us/request  "
            f"{rate:8.0f} req/s  ratio {rate / base:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
