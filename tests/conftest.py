"""Shared helpers: run ``python -m orchestro`` as a user would, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The default local:// registry lives under XDG_RUNTIME_DIR: give the test run its own, so
# tests (and the processes they start) never touch the user's real registry.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="orchestro-tests-")
os.environ.pop("ORCHESTRO_REGISTRY", None)
URL = re.compile(r"cell (\S+) serving on (http://\S+)")


class Cli:
    """A running ``orchestro`` process and the URLs of the cells it announced."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.urls: dict[str, str] = {}
        self.stdout: list[str] = []

    async def wait_serving(self, count: int = 1, timeout: float = 30.0) -> dict[str, str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while len(self.urls) < count:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    err = await self.stderr()
                    raise AssertionError(f"orchestro exited early: {self.stdout} {err}")
                self.stdout.append(line)
                if match := URL.search(line):
                    self.urls[match.group(1)] = match.group(2)
        return self.urls

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def exits_with(self, expected: int = 0, timeout: float = 30.0) -> None:
        """Wait for the exit; a different exit code fails with the tail of stderr."""
        code = await self.wait(timeout)
        if code != expected:
            tail = "\n".join((await self.stderr()).splitlines()[-40:])
            raise AssertionError(f"exit code {code}, expected {expected}; stderr ends:\n{tail}")

    async def stderr(self) -> str:
        """What the process wrote to stderr so far (a file, never a pipe: a process whose
        log lines nobody reads must not block on a full pipe)."""
        return self.stderr_path.read_text(errors="replace")

    async def rest_of_stdout(self) -> str:
        assert self.proc.stdout is not None
        return "".join(self.stdout) + (await self.proc.stdout.read()).decode()


async def start_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Cli:
    fd, name = tempfile.mkstemp(prefix="orchestro-stderr-", suffix=".log")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestro",
            *args,
            cwd=str(cwd or ROOT),
            env={**os.environ, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=fd,
        )
    finally:
        os.close(fd)
    return Cli(proc, Path(name))


async def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run a command to completion: (exit code, stdout, stderr)."""
    cli = await start_cli(*args, cwd=cwd, env=env)
    async with asyncio.timeout(timeout):
        out, _ = await cli.proc.communicate()
    assert cli.proc.returncode is not None
    return cli.proc.returncode, out.decode(), await cli.stderr()


@pytest.fixture
async def cli_processes() -> AsyncIterator[list[Cli]]:
    """Processes a test starts; any still running afterwards are killed."""
    started: list[Cli] = []
    yield started
    for cli in started:
        if cli.proc.returncode is None:
            cli.proc.kill()
            await cli.proc.wait()


pytest_plugins = ["pytester"]
