"""Memory under hostile deadlines: a distinct far-future deadline per request.

    python bench/hostile.py [--requests 1000000] [--budget 240] [--connections 32]

Starts the hello cell (its log to /dev/null), sends ``GET /greet`` with
``x-orchestro-deadline-ms`` set to a random far-future value per request (wrk with a Lua
script; hours to a day, and now and then ``inf``, ``1e400`` or a 400-digit number), in
10-second wrk runs until ``--requests`` were sent or ``--budget`` seconds passed, and prints
the cell's RSS before (after a warm-up), after each run, and once idle again. Before the
timer freed slots, 490,000 such requests grew a cell from 61 to 153 MB. Any 5xx answer is
reported. ``--pythonpath DIR`` runs another checkout's ``src`` (to compare). Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LUA = """
math.randomseed(os.time())
local n = 0
request = function()
  n = n + 1
  local value
  if n % 1000 == 0 then value = "inf"
  elseif n % 1000 == 1 then value = "1e400"
  elseif n % 1000 == 2 then value = string.rep("9", 400)
  else value = string.format("%.3f", 3600000 + math.random() * 82800000) end
  return wrk.format("GET", "/greet", {["x-orchestro-deadline-ms"] = value})
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(port: int, script: str, seconds: int, connections: int) -> tuple[int, int]:
    """(requests sent, non-2xx answers)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script]
    cmd.append(f"http://127.0.0.1:{port}/greet")
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    sent = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return sent, int(bad.group(1)) if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of load at most")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pythonpath", default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/hostile.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    port = free_port()
    cmd = [sys.executable, "-m", "orchestro", "run", "examples/hello.py", "--port", str(port)]
    cmd += ["--registry", "memory://"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(LUA)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the cell did not start") from None
                time.sleep(0.1)
        wrk(port, lua.name, 2, args.connections)  # warm-up
        time.sleep(1)
        before = rss_mb(proc.pid)
        print(f"RSS after warm-up: {before:.1f} MB", flush=True)
        sent = errors = 0
        began = time.monotonic()
        while sent < args.requests and time.monotonic() - began < args.budget:
            n, bad = wrk(port, lua.name, 10, args.connections)
            sent, errors = sent + n, errors + bad
            rss = rss_mb(proc.pid)
            print(f"{sent:9d} requests  RSS {rss:6.1f} MB  non-2xx {errors}", flush=True)
        time.sleep(3)
        after = rss_mb(proc.pid)
        print(
            f"\n{sent} requests with distinct far-future deadlines in "
            f"{time.monotonic() - began:.0f} s: RSS {before:.1f} MB -> {after:.1f} MB idle "
            f"({after - before:+.1f} MB); non-2xx answers: {errors}"
        )
    finally:
        os.unlink(lua.name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
