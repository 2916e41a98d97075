"""The cost of a ``/metrics`` scrape: CPU per scrape, and how long it stalls the event loop.

    python bench/scrape.py [--series 100,1000,5000] [--scrapes 20] [--on-loop]

Fills one process's telemetry with N duration series (a cell with N/5 routes and 5 statuses
each: ``http.server.request.duration``, 15 buckets, so each series is 17+ Prometheus samples)
plus their response-size series, then measures:

- the CPU time of one render (``prometheus_client`` text format, the cell's view), median;
- the loop stall: the longest gap a 1 ms ticker on the event loop sees while ``/metrics`` is
  scraped over a real socket from another process's point of view (an aiohttp client in the
  same loop would be stalled too, so the scrape runs from a thread), median over scrapes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import urllib.request

from prometheus_client import generate_latest

from orchestro.observability.prometheus import _CellView, exposition, metrics_handler
from orchestro.observability.telemetry import Telemetry


def fill(telemetry: Telemetry, cell: str, series: int) -> None:
    producer = telemetry.producer
    duration = producer.histogram("http.server.request.duration", "s", "Duration.")
    size = producer.histogram("http.server.response.body.size", "By", "Size.")
    for i in range(series):
        attributes: dict[str, str | int] = {
            "orchestro.cell": cell,
            "http.request.method": "GET",
            "http.route": f"/route/{i // 5}",
            "http.response.status_code": 200 + i % 5,
        }
        for value in (0.001, 0.02, 0.3):
            duration.series(attributes).append(value)
            size.series(attributes).append(100 * value)


async def stall_during_scrapes(port: int, scrapes: int) -> list[float]:
    """The longest ticker gap (s) during each scrape."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    for _ in range(scrapes):
        done = threading.Event()

        def scrape(done: threading.Event = done) -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                r.read()
            done.set()

        thread = threading.Thread(target=scrape)
        longest = 0.0
        last = loop.time()
        thread.start()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = loop.time()
            longest = max(longest, now - last)
            last = now
        thread.join()
        gaps.append(longest - 0.001)
    return gaps


async def serve_and_measure(
    telemetry: Telemetry, cell: str, scrapes: int, on_loop: bool
) -> list[float]:
    from aiohttp import web

    handler = metrics_handler(telemetry, cell)
    if on_loop:  # as before: rendered by the handler itself, on the event loop

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return exposition(request, _CellView(telemetry.registry, cell, True))

    server = web.Server(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await stall_during_scrapes(port, scrapes)
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", default="100,1000,5000")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--on-loop", action="store_true", help="render on the loop (as before)")
    args = parser.parse_args()
    print(f"{'series':>7} {'samples':>8} {'bytes':>9} {'CPU ms/scrape':>14} {'loop stall ms':>14}")
    for n in [int(x) for x in args.series.split(",")]:
        telemetry = Telemetry(service_name="scrape", set_global=False)
        telemetry.cells.append("c")
        fill(telemetry, "c", n)
        view = _CellView(telemetry.registry, "c", True)
        body = generate_latest(view)
        cpu = []
        for _ in range(args.scrapes):
            began = time.process_time()
            generate_latest(view)
            cpu.append(time.process_time() - began)
        gaps = asyncio.run(serve_and_measure(telemetry, "c", args.scrapes, args.on_loop))
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        print(
            f"{n:7d} {samples:8d} {len(body):9d} {statistics.median(cpu) * 1000:14.1f} "
            f"{statistics.median(gaps) * 1000:14.1f}",
            flush=True,
        )
        telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
