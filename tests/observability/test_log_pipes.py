"""From the outside: a cell whose stdout and stderr are pipes nobody reads keeps answering,
drops log lines rather than stalling, and says how many once someone reads."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import pytest

from orchestro.observability.buffer import BUFFER_LINES
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CELL = (sys.executable, "-m", "orchestro", "run", "examples/hello.py")
REQUESTS = BUFFER_LINES + 2_000  # more access lines than the buffer holds, and a pipe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_cell_whose_output_nobody_reads_keeps_answering() -> None:
    port = free_port()
    # Pipes of our own that nothing reads until the end (asyncio's subprocess pipes would
    # be read into a buffer as the data comes).
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; nothing waits on it here
        [*CELL, "--port", str(port), "--registry", "memory://"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/greet"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the cell did not start"
                await asyncio.sleep(0.1)

            answered = 0

            async def worker(n: int) -> None:
                nonlocal answered
                for _ in range(n):
                    async with session.get(url) as response:
                        assert response.status == 200
                        await response.read()
                    answered += 1

            async with asyncio.timeout(240):
                await asyncio.gather(*(worker(REQUESTS // 16) for _ in range(16)))
            assert answered >= REQUESTS - 16
            # Now someone reads: the buffered lines arrive, then the drop count ...
            assert proc.stderr is not None
            received: list[bytes] = []
            reader = threading.Thread(target=lambda: received.extend(proc.stderr))  # type: ignore[arg-type]
            reader.start()
            async with asyncio.timeout(60):
                while not any(b"log lines dropped" in line for line in received):
                    await asyncio.sleep(0.05)
            # ... and the cell still answers.
            async with session.get(url) as response:
                assert response.status == 200
        # At exit, nothing buffered is lost while the stream is read.
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        await asyncio.to_thread(reader.join, 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in received]
    access = [line for line in lines if line["logger"] == "orchestro.access"]
    drops = [line for line in lines if line["logger"] == "orchestro.log"]
    assert drops, "no line says how many lines were dropped"
    assert all("log lines dropped" in line["message"] for line in drops)
    dropped = sum(line["dropped"] for line in drops)
    assert dropped > 0
    # Every access line was either written or counted as dropped.
    assert len(access) + dropped >= answered
    assert lines[-1]["message"] == "cell greeter stopped"
