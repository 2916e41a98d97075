"""Mesh calls over mutual TLS (kept alive) vs plain mesh calls, at concurrency 32.

    python bench/mtls.py [--calls 10000] [--rounds 3]

The vault cell (examples/vault.py) runs in another process pinned to core 0 with its public
port and its mesh listener; this process (core 1) calls it through the mesh, alternating
each round: plain HTTP to the public port (``GET /status``), mutual TLS to the mesh listener
as the teller (the same ``GET /status``: the transport's cost), and mutual TLS to the
internal ``GET /secret`` (plus the access rule and the caller read from the certificate).
Both processes run on uvloop when it is installed, as `orchestro run` does by default.
It prints calls/s medians, the ratio of the same call over mTLS to plain (target >= 0.85),
the same as a ratio of CPU time per call (server and client processes, read from /proc:
what a saturated machine's throughput follows, and steadier than calls/s when other work
shares the cores),
the internal call's for scale, and the TLS handshakes the client made per 10,000 calls
(target: no more than the pool, 32 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.common import cpu_seconds, free_port, rate, split_cores, start_cell  # noqa: E402
from examples.vault import Vault  # noqa: E402

from orchestro import Mesh  # noqa: E402
from orchestro.security.ca import DevelopmentCA  # noqa: E402
from orchestro.security.tls import CellTLS  # noqa: E402

CONCURRENCY = 32


def count_handshakes(context: ssl.SSLContext) -> list[int]:
    """Count the TLS connections made with ``context`` (asyncio wraps a BIO per connection)."""
    made = [0]
    wrap = context.wrap_bio

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLObject:
        made[0] += 1
        return wrap(*args, **kwargs)

    context.wrap_bio = counted  # type: ignore[method-assign]
    return made


def start_server(pin: list[str], port: int, mesh_port: int, state: str) -> subprocess.Popen[bytes]:
    args = ["examples/vault.py", "--cell", "vault", "--port", str(port), "--mesh-port",
            str(mesh_port), "--registry", "memory://", "--log-level", "warning"]  # fmt: skip
    source = f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "ORCHESTRO_STATE_DIR": state, "PYTHONPATH": source}
    return start_cell(pin, args, port, env=env, what="the vault cell")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin = split_cores()
    state = tempfile.mkdtemp(prefix="orchestro-bench-mtls-")
    os.environ["ORCHESTRO_STATE_DIR"] = state
    port, mesh_port = free_port(), free_port()
    server = start_server(pin, port, mesh_port, state)
    try:
        ca = DevelopmentCA.load_or_create(trust_domain="orchestro.local")  # the server's
        teller = CellTLS(ca.issue("teller"))
        handshakes = count_handshakes(teller.client)
        registry = f"static://vault=http://127.0.0.1:{port}?mesh={mesh_port}"
        results: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}  # CPU µs per call, server + this process
        per_10k: list[float] = []
        async with Mesh(registry) as calls:
            plain = calls.client(Vault)  # no identity: the public port, plain HTTP
            tls = calls.bind("teller", teller).client(Vault)  # the mesh listener, as the teller
            runs: dict[str, Callable[[], Awaitable[Any]]] = {
                "plain /status": plain.status,
                "mtls /status": tls.status,
                "mtls /secret": tls.secret,
            }
            for call in runs.values():
                await rate(call, 640, CONCURRENCY)  # warm-up: the pools fill, caches
            for round_no in range(args.rounds):
                order = list(runs.items())
                if round_no % 2:
                    order.reverse()
                for name, call in order:
                    before = handshakes[0]
                    used = cpu_seconds(server.pid) + time.process_time()
                    value = await rate(call, args.calls, CONCURRENCY)
                    used = cpu_seconds(server.pid) + time.process_time() - used
                    cpu.setdefault(name, []).append(used * 1e6 / args.calls)
                    if name.startswith("mtls"):
                        per_10k.append((handshakes[0] - before) * 10_000 / args.calls)
                    results.setdefault(name, []).append(value)
                    print(
                        f"round {round_no + 1} {name:13} {value:8.0f} calls/s "
                        f"{cpu[name][-1]:6.0f} us CPU/call",
                        flush=True,
                    )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)
    print()
    base = statistics.median(results["plain /status"])
    print(f"plain mesh call (c={CONCURRENCY}):       {base:8.0f}/s")
    value = statistics.median(results["mtls /status"])
    print(
        f"the same call over mTLS keep-alive: {value:8.0f}/s  ratio {value / base:.3f} "
        "(target >= 0.85)"
    )
    value = statistics.median(results["mtls /secret"])
    print(
        f"an internal call (rule, caller, model): {value:8.0f}/s  ratio {value / base:.3f} "
        "(no plain equivalent: for scale)"
    )
    plain_cpu = statistics.median(cpu["plain /status"])
    for name in ("mtls /status", "mtls /secret"):
        used = statistics.median(cpu[name])
        print(
            f"CPU per call (both processes): {name} {used:.0f} us vs plain {plain_cpu:.0f} us: "
            f"throughput-equivalent ratio {plain_cpu / used:.3f} (steadier than calls/s on a "
            "loaded machine)"
        )
    print(
        f"TLS handshakes: {handshakes[0]} in all (warm-up included), per 10,000 timed calls "
        f"{max(per_10k):.1f} at most (target <= pool size {CONCURRENCY})"
    )
    return 0


if __name__ == "__main__":
    # The loop `orchestro run` uses by default (uvloop when installed: its TLS is in C, where
    # asyncio's SSL protocol is Python), in the calling process as in the called one.
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        sys.exit(runner.run(main()))
