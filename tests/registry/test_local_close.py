"""A local registry's watch cancelled while a read runs in its worker thread: the
connection is never closed under the running statement (that crashed whole processes with
SIGSEGV at shutdown: a replica exiting -11 after a clean drain, its controller exiting 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STRESS = """
import asyncio, random, sys
from pathlib import Path
from orchestro.registry.local import LocalRegistry

async def main():
    registry = LocalRegistry(Path(sys.argv[1]), ttl=5)
    await registry.open()
    for _ in range(400):
        async def follow():
            async for _ in registry.watch():
                pass
        task = asyncio.create_task(follow())
        await asyncio.sleep(random.uniform(0, 0.003))  # often: mid-read in the worker
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    await registry.aclose()

asyncio.run(main())
print("clean")
"""


def test_cancelling_watches_mid_read_never_crashes_the_process(tmp_path: Path) -> None:
    # In a process of its own: a crash is an exit code here, not the test run's end.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STRESS), str(tmp_path / "registry.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "clean"
