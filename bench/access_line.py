"""The cost of one access line: through ``logging`` (as before) and the gateway's direct path.

    python bench/access_line.py [--lines 20000] [--repeats 7]

Both write the same JSON line for a mocked ``GET /greet`` into orchestro's buffered handler
(its writer thread writes to /dev/null). The direct path is measured in its two halves: what
the request pays on the event loop (its entry: the request's values, put into the buffer),
and what the writer thread pays to make the line of an entry, in a batch: in C where the
optional extension is built (``orchestro.observability._lines``), and in Python, the
fallback, either way (``ORCHESTRO_NO_EXTENSIONS=1`` makes the gateway use it). Prints the median
time per line of each (noisy machine: compare the figures of one run). In a busy gateway
each costs more than here, where the same code runs in a loop with warm caches: the gateway
benchmark (``bench/gateway.py``, ``orchestro-default``) measures the whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from unittest import mock

from aiohttp.test_utils import make_mocked_request

import orchestro.gateway.telemetry  # noqa: F401 - teaches RequestContext the request id
from orchestro.gateway.pipeline import Route
from orchestro.gateway.problem import REQUEST_ID_KEY
from orchestro.gateway.route_meter import RouteMeter, _log_access
from orchestro.observability import access, buffer, context, logs


class _Owner:
    _telemetry = None
    _cell = "greeter"
    _instance = "greeter-vm-1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logs.configure_logging("info", "json", cell="greeter", instance="greeter-vm-1", stream=devnull)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, buffer.BufferedHandler)
    peer = mock.Mock(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8081))
    request = make_mocked_request("GET", "/greet", headers={"User-Agent": "wrk"}, protocol=peer)
    request[REQUEST_ID_KEY] = "4313904ad946000000000001"
    meter = RouteMeter(_Owner, Route(None, "/greet"))  # type: ignore[arg-type]
    meter._template = "/greet"

    # Each request starts with the cheap request context (the gateway's tuple), which the
    # logging path makes whole: set it before each line, in both (~0.1 µs).
    cheap = ("greeter", "greeter-vm-1", request, 0.0)
    set_current = context.set_current

    def through_logging() -> None:
        set_current(cheap)
        _log_access(request, "GET", 200, 0.0012, "/greet")

    def direct() -> None:
        set_current(cheap)
        handler.put(meter._access_entry(request, "GET", 200, 0.0012))

    set_current(cheap)
    entry = meter._access_entry(request, "GET", 200, 0.0012)
    make = entry[0]
    assert meter._lines is not None
    in_python = meter._lines._make

    def writer() -> None:
        make(entry)

    def writer_in_python() -> None:
        in_python(entry)

    steps = {"logging": through_logging, "direct": direct, "writer": writer}
    if access.EXTENSION:
        steps["python"] = writer_in_python
    results: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, line in steps.items():
            token = context._current.set(None)
            began = time.thread_time()  # this thread's CPU: not the writer's, nor waits for it
            for _ in range(args.lines):
                line()
            results[name].append((time.thread_time() - began) / args.lines * 1e6)
            context._current.reset(token)
            handler.flush()
    slow, loop, made = (statistics.median(results[k]) for k in ("logging", "direct", "writer"))
    print(f"access line through logging:          {slow:6.2f} µs on the event loop")
    print(f"access line, direct: the request pays {loop:6.2f} µs on the event loop")
    if access.EXTENSION:
        python = statistics.median(results["python"])
        print(f"                     the writer pays  {made:6.2f} µs on its thread, a line (C)")
        print(
            f"                                      {python:6.2f} µs in Python: C/Python "
            f"{made / python:.2f}"
        )
    else:
        print(
            f"                     the writer pays  {made:6.2f} µs on its thread, a line "
            "(Python: the C extension is not in use)"
        )
    print(f"event loop's cost, direct vs logging: {loop / slow:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
