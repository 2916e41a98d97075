"""Gateway throughput: the hello cell through orchestro vs a bare aiohttp handler.

    python bench/gateway.py [--copies 2] [--rounds 6] [--connections 64] [--kinds K,...]

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
warning``).

**How, on a noisy machine.** One server process can run ~5% faster or slower than an
identical one for its whole life (memory layout), and a shared VM's speed drifts by more
than that within a minute. So, per event loop, this starts ``--copies`` processes of every
server at once (pinned to core 0; wrk and the sink to core 1), warms each up, then runs
``--rounds`` rounds of one-second ``wrk`` runs over all of them, each round in a new random
order: every server is measured as often, early and late, as the others. Prints per server
the median requests/s, p99 latency and CPU time per request (from ``/proc``, every thread of
the server: the log writer's too), and each ratio to bare (targets: ``orchestro`` >= 0.90,
``orchestro-default`` >= 0.85). Needs wrk (Debian: wrk) and Linux.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, free_port, pin, wrk  # noqa: E402

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


class Run(NamedTuple):
    """One server's one-second measurement."""

    rate: float  # requests/s
    p99_ms: float
    cpu_us: float  # the server's CPU time per request


def start_server(kind: str, loop: str, port: int, sink: int) -> subprocess.Popen[bytes]:
    """Start one server of ``kind`` on ``port`` (not waiting for it: see :func:`serving`)."""
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("OTEL_")]:
        del env[name]
    if kind.startswith("orchestro"):
        cmd = [sys.executable, "-m", "orchestro", "run", "examples/hello.py"]
        cmd += ["--port", str(port), "--loop", loop]
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
        cmd = [sys.executable, str(ROOT / "bench" / "bare_aiohttp.py")]
        cmd += ["--port", str(port), "--loop", loop]
    # stderr (the log) is no terminal, as in a container: JSON lines.
    return subprocess.Popen(
        [*pin(0), *cmd],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if kind.startswith("orchestro-default") else None,
        env=env,
    )


def serving(proc: subprocess.Popen[bytes], kind: str, port: int) -> None:
    """Return once the server answers GET /greet; exit if it does not within 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{kind} server on port {port} did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    global KINDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2, help="processes per server")
    parser.add_argument("--rounds", type=int, default=6, help="one-second runs per process")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--kinds", default=",".join(KINDS[1:]), help="servers besides bare")
    args = parser.parse_args()
    chosen = [k for k in args.kinds.split(",") if k]
    unknown = set(chosen) - set(KINDS)
    if unknown:
        parser.error(f"unknown --kinds {sorted(unknown)}: choose from {', '.join(KINDS[1:])}")
    if args.copies < 1 or args.rounds < 1:
        parser.error("--copies and --rounds must be at least 1")
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
    results: dict[tuple[str, str], list[Run]] = {}
    sink_port = free_port()
    sink = subprocess.Popen(
        [*pin(1), sys.executable, str(ROOT / "bench" / "otlp_sink.py"), "--port", str(sink_port)]
    )
    try:
        for loop in loops:
            measure_loop(args, loop, results, sink_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats", timeout=5) as r:
            print(f"OTLP sink received: {r.read().decode()}")
    finally:
        stop_server(sink)
    report(loops, results)
    return 0


def measure_loop(
    args: argparse.Namespace, loop: str, results: dict[tuple[str, str], list[Run]], sink: int
) -> None:
    """Every server's copies on ``loop`` at once, measured in rounds of random order."""
    slots = [(kind, free_port()) for _ in range(args.copies) for kind in KINDS]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for kind, port in slots:
            procs.append(start_server(kind, loop, port, sink))
        for proc, (kind, port) in zip(procs, slots, strict=True):
            serving(proc, kind, port)
            wrk(f"http://127.0.0.1:{port}/greet", 1, args.connections)  # warm-up
        for round_no in range(1, args.rounds + 1):
            order = list(range(len(slots)))
            random.shuffle(order)
            for i in order:
                kind, port = slots[i]
                before = cpu_seconds(procs[i].pid)
                run = wrk(f"http://127.0.0.1:{port}/greet", 1, args.connections)
                used = cpu_seconds(procs[i].pid) - before
                results.setdefault((kind, loop), []).append(
                    Run(run.rate, run.p99_ms, used * 1e6 / max(1, run.requests))
                )
            so_far = {k: statistics.median(r.rate for r in results[(k, loop)]) for k in KINDS}
            print(
                f"round {round_no}/{args.rounds} {loop}: "
                + "  ".join(f"{k} {so_far[k] / so_far['bare']:.3f}" for k in KINDS[1:]),
                flush=True,
            )
    finally:
        for proc in procs:
            stop_server(proc)


def report(loops: list[str], results: dict[tuple[str, str], list[Run]]) -> None:
    print()
    print(f"{'loop':8} {'server':21} {'req/s':>8} {'p99 ms':>7} {'CPU us/req':>11}  (medians)")
    for loop in loops:
        for kind in KINDS:
            runs = results[(kind, loop)]
            print(
                f"{loop:8} {kind:21} {statistics.median(r.rate for r in runs):8.0f} "
                f"{statistics.median(r.p99_ms for r in runs):7.2f} "
                f"{statistics.median(r.cpu_us for r in runs):11.1f}"
            )
    print()
    for loop in loops:
        bare = results[("bare", loop)]
        bare_rate = statistics.median(r.rate for r in bare)
        bare_cpu = statistics.median(r.cpu_us for r in bare)
        for kind in KINDS[1:]:
            ours = results[(kind, loop)]
            ratio = statistics.median(r.rate for r in ours) / bare_rate
            cpu = bare_cpu / statistics.median(r.cpu_us for r in ours)
            target = ""
            if kind in TARGETS:
                met = "met" if ratio >= TARGETS[kind] else "NOT met"
                target = f"; target >= {TARGETS[kind]:.2f}: {met}"
            print(f"ratio {kind}/bare ({loop}): {ratio:.3f} (CPU per request: {cpu:.3f}{target})")


if __name__ == "__main__":
    sys.exit(main())
