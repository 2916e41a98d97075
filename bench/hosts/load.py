"""Open-loop load from inside a host: ``python -m bench.hosts.load URL OUT [RATE]``.

Sends ``GET URL`` at a steady ``RATE`` per second (default 100) whatever the answers take —
an open loop, so a stalled call does not slow the arrivals and hide itself — until SIGTERM,
then writes one line per call to ``OUT``: ``[start, seconds, status, host]`` (``start`` on
the machine's monotonic clock, which every namespace shares; status 0 when the client gave
up at 10 s or could not connect). Per-call records, not only percentiles: a few stalled calls
hide under a p99 of thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

CLIENT_TIMEOUT = 10.0  # the clients give up at 10 s
WARMUP = 50


async def main(url: str, out: Path, rate: float) -> list[tuple[float, float, int, str]]:
    records: list[tuple[float, float, int, str]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    pending: set[asyncio.Task[None]] = set()

    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> None:
            started = time.monotonic()
            status, host = 0, ""
            try:
                async with session.get(url) as response:
                    status = response.status
                    body = await response.read()
                    if status == 200:
                        host = json.loads(body).get("host", "")
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass
            records.append((started, time.monotonic() - started, status, host))

        # Warm up (not recorded): first connections, first validations, first imports.
        for _ in range(WARMUP):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.get(url) as response:
                    await response.read()
        flusher = asyncio.ensure_future(_flush(records, out, stop))
        out.with_suffix(".started").write_text(str(time.monotonic()))
        interval = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.ensure_future(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        if pending:
            await asyncio.wait(pending)
        await flusher
    return sorted(records)


async def _flush(
    records: list[tuple[float, float, int, str]], out: Path, stop: asyncio.Event
) -> None:
    """Append the calls finished so far to ``OUT.partial`` every 0.5 s, so the bed can watch
    traffic during a scenario (the sorted whole is written at the end)."""
    done = 0
    with open(out.with_suffix(".partial"), "a") as partial:  # noqa: ASYNC230
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            new, done = records[done:], len(records)
            partial.write("".join(json.dumps(r) + "\n" for r in new))
            partial.flush()


if __name__ == "__main__":
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    out = Path(sys.argv[2])
    records = asyncio.run(main(sys.argv[1], out, rate))
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
