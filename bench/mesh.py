"""Mesh call speed: a typed mesh call vs a raw aiohttp GET, and a co-located call vs HTTP.

    python bench/mesh.py [--calls 3000] [--rounds 3]

The hello cell runs in another process pinned to core 0; this process (pinned to core 1)
calls ``GET /greet`` sequentially and at concurrency 32, alternating the raw session and the
mesh stub (static:// registry, so discovery adds nothing), and prints calls/s medians and the
ratio mesh/raw (target >= 0.85). Then it times typed calls to a cell hosted in this process
(the local transport) against the sequential HTTP mesh call (target >= 50x).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from bench.common import free_port, rate, split_cores, start_cell  # noqa: E402
from examples.hello import Greeter  # noqa: E402

from orchestro import Mesh  # noqa: E402


async def local_rates(calls: int) -> tuple[float, float]:
    """Typed mesh calls to a cell in this process, and bare awaits of the same method."""
    from orchestro.host import CellHost

    async with Mesh("memory://") as local:
        host = CellHost(Greeter, host="127.0.0.1", port=0, mesh=local)
        await host.start()
        try:
            greeter = local.client(Greeter)
            plain = Greeter()
            await rate(greeter.greet, 1000, 1)
            local_rate = statistics.median([await rate(greeter.greet, calls, 1) for _ in range(3)])
            bare_rate = statistics.median([await rate(plain.greet, calls, 1) for _ in range(3)])
        finally:
            await host.drain()
    return local_rate, bare_rate


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin = split_cores()
    port = free_port()
    args_ = ["examples/hello.py", "--port", str(port), "--registry", "memory://"]
    server = start_cell(pin, [*args_, "--log-level", "warning"], port, what="the hello cell")
    url = f"http://127.0.0.1:{port}"
    try:
        results: dict[tuple[str, int], list[float]] = {}
        async with (
            aiohttp.ClientSession() as session,
            Mesh(f"static://greeter={url}") as calls,
        ):
            greeter = calls.client(Greeter)

            async def raw() -> Any:
                async with session.get(f"{url}/greet") as response:
                    return await response.json()

            async def stub() -> Any:
                return await greeter.greet()

            await rate(raw, 300, 8)  # warm-up: connections, caches
            await rate(stub, 300, 8)
            for round_no in range(args.rounds):
                for concurrency in (1, 32):
                    order = [("raw", raw), ("mesh", stub)]
                    if round_no % 2:
                        order.reverse()
                    for name, call in order:
                        value = await rate(call, args.calls, concurrency)
                        results.setdefault((name, concurrency), []).append(value)
                        line = f"round {round_no + 1} c={concurrency:<2} {name:4} {value:8.0f}"
                        print(f"{line} calls/s", flush=True)
        local_rate, bare_rate = await local_rates(args.calls * 5)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print()
    http_rate = statistics.median(results[("mesh", 1)])
    print(
        f"co-located: local mesh call {local_rate:9.0f}/s ({1e6 / local_rate:.1f} us), "
        f"bare await {bare_rate:9.0f}/s; local/HTTP mesh call {local_rate / http_rate:.1f}x "
        "(target >= 50x)"
    )
    for concurrency in (1, 32):
        raw_rate = statistics.median(results[("raw", concurrency)])
        mesh_rate = statistics.median(results[("mesh", concurrency)])
        print(
            f"concurrency {concurrency:>2}: raw {raw_rate:8.0f}/s  mesh {mesh_rate:8.0f}/s  "
            f"ratio mesh/raw {mesh_rate / raw_rate:.3f} (target >= 0.85)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
