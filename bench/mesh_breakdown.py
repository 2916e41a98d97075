"""Where a mesh call's client time goes: CPU per call, layer by layer, at concurrency 32.

    python bench/mesh_breakdown.py [--seconds 3] [--rounds 2]

Starts the hello cell pinned to core 0 and, from this process pinned to core 1, drives
``GET /greet`` through each layer in turn, measuring this process's CPU time per call
(``/proc``-backed ``os.times``): a raw default ``aiohttp`` session, ``HttpTransport.send``
alone, with the mesh's deadline and attempt headers, ``Mesh.call``, and the typed stub —
with mesh telemetry on and off. Prints medians and each layer's cost over the raw call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from examples.hello import Greeter  # noqa: E402

from mesh import free_port, start_server  # noqa: E402
from orchestro import Mesh  # noqa: E402
from orchestro.mesh.transports.base import CallRequest  # noqa: E402
from orchestro.mesh.transports.http import HttpTransport  # noqa: E402
from orchestro.registry import Instance  # noqa: E402


async def cost(call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int) -> float:
    """Client CPU microseconds per call."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await call()
            done += 1

    before = sum(os.times()[:2])
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (sum(os.times()[:2]) - before) / done * 1e6


async def measure(url: str, seconds: float, rounds: int) -> dict[str, list[float]]:
    host, port = url.rsplit("//", 1)[1].split(":")
    instance = Instance(cell="greeter", id="bench", host=host, port=int(port))
    request = CallRequest("GET", "/greet")
    headers = {"x-orchestro-deadline-ms": "5000", "x-orchestro-attempt": "1"}
    transport = HttpTransport()
    results: dict[str, list[float]] = {}
    async with (
        aiohttp.ClientSession() as session,
        Mesh(f"static://greeter={url}") as traced,
        Mesh(f"static://greeter={url}", telemetry=False) as quiet,
    ):

        async def raw() -> Any:
            async with session.get(f"{url}/greet") as response:
                return await response.json()

        layers: dict[str, Callable[[], Awaitable[Any]]] = {
            "raw aiohttp GET": raw,
            "HttpTransport.send": lambda: transport.send(instance, request, 5.0),
            "send + mesh headers": lambda: transport.send(instance, request, 5.0, headers),
            "Mesh.call": lambda: traced.call("greeter", request),
            "Mesh.call, telemetry off": lambda: quiet.call("greeter", request),
            "typed stub": traced.client(Greeter).greet,
            "typed stub, telemetry off": quiet.client(Greeter).greet,
        }
        for call in layers.values():
            await cost(call, 0.5, 8)  # warm-up: connections, caches
        for round_no in range(rounds):
            order = list(layers.items())
            for name, call in order if round_no % 2 == 0 else order[::-1]:
                results.setdefault(name, []).append(await cost(call, seconds, 32))
    await transport.aclose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    pin: list[str] = []
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
        pin = ["taskset", "-c", "0"]
    port = free_port()
    server = start_server(pin, port)
    try:
        results = asyncio.run(measure(f"http://127.0.0.1:{port}", args.seconds, args.rounds))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    raw = statistics.median(results["raw aiohttp GET"])
    print(f"{'client, concurrency 32':28} {'CPU us/call':>12} {'over raw':>9}")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"{name:28} {value:12.1f} {value - raw:+9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
