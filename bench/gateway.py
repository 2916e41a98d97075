"""Gateway throughput: the hello cell through orchestro vs a bare aiohttp handler.

    python bench/gateway.py [--rounds 5] [--duration 4] [--connections 64]

Servers measured, each against the same bare aiohttp handler:

- ``orchestro-off``: telemetry off (``--metrics false``);
- ``orchestro``: metrics, and tracing with no exporter (the trace context is continued and
  propagated, no span is recorded), the access log off (``--log-level warning``): "quiet";
- ``orchestro-default``: what a container gets with no options at all — the same, plus the
  access log on (level info) in JSON, since stderr is not a terminal (it goes to
  ``/dev/null`` here);
- ``orchestro-default-py``: the same, its access lines made in Python
  (``ORCHESTRO_NO_EXTENSIONS=1``): where orchestro was installed without a C compiler;
- ``orchestro-otlp``: spans recorded and sent by a batch OTLP/HTTP exporter to a local sink
  (``bench/otlp_sink.py``);
- ``orchestro-otlp-1%``: the same exporter, with 1% of the traces sampled
  (``parentbased_traceidratio``; every request here starts a trace).

The access log is off in every run but the ``orchestro-default`` ones (``--log-level
warning``). Each round runs every (loop, server) pair in turn, the server pinned to core 0
and wrk (and the sink) to core 1, and measures requests/s and p99 latency after a warm-up.
Prints the medians and each ratio to bare per event loop (targets: ``orchestro`` >= 0.90,
``orchestro-default`` >= 0.85). ``--kinds`` measures a subset (bare is
always included). Needs wrk (Debian: wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


KINDS = (
    "bare",
    "orchestro-off",
    "orchestro",
    "orchestro-default",
    "orchestro-default-py",
    "orchestro-otlp-1%",
    "orchestro-otlp",
)
TARGETS = {"orchestro": 0.90, "orchestro-default": 0.85}


def start_server(kind: str, loop: str, port: int, sink: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("OTEL_")]:
        del env[name]
    if kind.startswith("orchestro"):
        cmd = [
            sys.executable,
            "-m",
            "orchestro",
            "run",
            "examples/hello.py",
            "--port",
            str(port),
            "--loop",
            loop,
        ]
        if not kind.startswith("orchestro-default"):
            cmd += ["--log-level", "warning"]
        if kind == "orchestro-default-py":
            env["ORCHESTRO_NO_EXTENSIONS"] = "1"
        if kind == "orchestro-off":
            cmd += ["--metrics", "false"]
        if kind.startswith("orchestro-otlp"):
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink}"
        if kind == "orchestro-otlp-1%":
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    else:
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "bare_aiohttp.py"),
            "--port",
            str(port),
            "--loop",
            loop,
        ]
    # stderr (the log) is no terminal, as in a container: JSON lines.
    proc = subprocess.Popen(
        [*pin(0), *cmd],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if kind.startswith("orchestro-default") else None,
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{kind} server on port {port} did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(port: int, duration: float, connections: int) -> tuple[float, float]:
    """(requests/s, p99 ms) for GET /greet."""
    cmd = [
        *pin(1),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        f"http://127.0.0.1:{port}/greet",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rps, p99


def main() -> int:
    global KINDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Each round starts a fresh process per server: on a shared VM one process can run ~5%
    # faster or slower than an identical one for its whole life (memory layout), so the
    # median needs several.
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--kinds", default=",".join(KINDS[1:]), help="servers besides bare")
    args = parser.parse_args()
    chosen = [k for k in args.kinds.split(",") if k]
    unknown = set(chosen) - set(KINDS)
    if unknown:
        parser.error(f"unknown --kinds {sorted(unknown)}: choose from {', '.join(KINDS[1:])}")
    KINDS = ("bare", *[k for k in KINDS[1:] if k in chosen])
    if not shutil.which("wrk"):
        print("bench/gateway.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    loops = args.loops.split(",")
    if "uvloop" in loops:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("uvloop not installed: measuring asyncio only", file=sys.stderr)
            loops = [loop for loop in loops if loop != "uvloop"]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    sink_port = free_port()
    sink = subprocess.Popen(
        [*pin(1), sys.executable, str(ROOT / "bench" / "otlp_sink.py"), "--port", str(sink_port)]
    )
    try:
        run_rounds(args, loops, results, sink_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats", timeout=5) as r:
            print(f"OTLP sink received: {r.read().decode()}")
    finally:
        stop_server(sink)
    report(loops, results)
    return 0


def run_rounds(
    args: argparse.Namespace,
    loops: list[str],
    results: dict[tuple[str, str], list[tuple[float, float]]],
    sink_port: int,
) -> None:
    for round_no in range(1, args.rounds + 1):
        for loop in loops:
            order = KINDS if round_no % 2 else KINDS[::-1]
            for kind in order:
                port = free_port()
                proc = start_server(kind, loop, port, sink_port)
                try:
                    wrk(port, 1.0, args.connections)  # warm-up
                    rps, p99 = wrk(port, args.duration, args.connections)
                finally:
                    stop_server(proc)
                results.setdefault((kind, loop), []).append((rps, p99))
                print(
                    f"round {round_no} {loop:8} {kind:18} {rps:10.0f} req/s  p99 {p99:6.2f} ms",
                    flush=True,
                )


def report(loops: list[str], results: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    print()
    print(f"{'loop':8} {'server':18} {'median req/s':>12} {'median p99 ms':>14}")
    for loop in loops:
        for kind in KINDS:
            runs = results[(kind, loop)]
            print(
                f"{loop:8} {kind:18} {statistics.median(r for r, _ in runs):12.0f} "
                f"{statistics.median(p for _, p in runs):14.2f}"
            )
    print()
    for loop in loops:
        bare = statistics.median(r for r, _ in results[("bare", loop)])
        for kind in KINDS[1:]:
            ours = statistics.median(r for r, _ in results[(kind, loop)])
            per_round = [
                o[0] / b[0]
                for o, b in zip(results[(kind, loop)], results[("bare", loop)], strict=True)
            ]
            target = f"; target >= {TARGETS[kind]:.2f}" if kind in TARGETS else ""
            print(
                f"ratio {kind}/bare ({loop}): {ours / bare:.3f} "
                f"(per-round median {statistics.median(per_round):.3f}{target})"
            )


if __name__ == "__main__":
    sys.exit(main())
