"""The cost of one access line: through ``logging`` (as before) and the gateway's direct path.

    python bench/access_line.py [--lines 20000] [--repeats 7]

Both write the same JSON line for a mocked ``GET /greet`` into orchestro's buffered handler
(its writer thread writes to /dev/null). Prints the median time per line of each, and their
ratio (noisy machine: compare the two figures of one run).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

from aiohttp.test_utils import make_mocked_request

import orchestro.gateway.telemetry  # noqa: F401 - teaches RequestContext the request id
from orchestro.gateway.pipeline import Route
from orchestro.gateway.problem import REQUEST_ID_KEY
from orchestro.gateway.route_meter import RouteMeter, _log_access
from orchestro.observability import context, logs


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
    assert isinstance(handler, logs.BufferedHandler)
    request = make_mocked_request("GET", "/greet", headers={"User-Agent": "wrk"})
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
        handler.put(meter._access_line(request, "GET", 200, 0.0012))

    results: dict[str, list[float]] = {"logging": [], "direct": []}
    for _ in range(args.repeats):
        for name, line in (("logging", through_logging), ("direct", direct)):
            token = context._current.set(None)
            began = time.perf_counter()
            for _ in range(args.lines):
                line()
            results[name].append((time.perf_counter() - began) / args.lines * 1e6)
            context._current.reset(token)
            handler.flush()
    slow, fast = statistics.median(results["logging"]), statistics.median(results["direct"])
    print(f"access line through logging: {slow:6.2f} µs")
    print(f"access line, direct:         {fast:6.2f} µs  ({slow / fast:.1f}x cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
