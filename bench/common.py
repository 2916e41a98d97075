"""What the benchmarks share: free ports, the two cores split between a server and its
load, a cell started as users start it (``python -m orchestro run``), a call rate, and a
``wrk`` run."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "Wrk",
    "cpu_seconds",
    "free_port",
    "pin",
    "rate",
    "split_cores",
    "start_cell",
    "wrk",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(core: int) -> list[str]:
    """The command prefix that pins a process to ``core`` (none on a machine with one core,
    or without taskset)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


def split_cores() -> list[str]:
    """Pin this process to core 1; the command prefix that pins a server to core 0 (none
    on a machine with one core, or without taskset)."""
    prefix = pin(0)
    if prefix:
        os.sched_setaffinity(0, {1})
    return prefix


def start_cell(
    pin: Sequence[str],
    args: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    what: str = "the cell",
) -> subprocess.Popen[bytes]:
    """``python -m orchestro run ARGS`` from the repository, once its ``/readyz`` on
    ``port`` answers (its output to /dev/null: nothing reads it)."""
    server = subprocess.Popen(
        [*pin, sys.executable, "-m", "orchestro", "run", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
    )
    for _ in range(400):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.05)
    server.kill()
    raise SystemExit(f"{what} did not start (python -m orchestro run {' '.join(args)})")


async def rate(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    """Calls per second of ``call``, ``calls`` of them made by ``concurrency`` workers."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Wrk(NamedTuple):
    """What one ``wrk`` run measured."""

    requests: int
    rate: float  # requests/s
    p99_ms: float


def wrk(url: str, seconds: int = 1, connections: int = 64) -> Wrk:
    """``wrk`` (one thread, pinned to core 1) against ``url``; raises SystemExit if any
    response was not a 2xx or a socket failed (a benchmark of errors measures nothing)."""
    cmd = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors from {url}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return Wrk(requests, rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit])
