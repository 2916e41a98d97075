"""Signals as they really arrive, from the outside: ``python -m orchestro run`` in a process
group of its own (as a shell starts it), then Ctrl-C (SIGINT to the group), SIGTERM and
SIGHUP to the group and to the process alone, for a single process and for a controller,
on asyncio and on uvloop. Every trial must be clean: the exit code the lifecycle table
promises, the request in flight answered, no traceback, no replica crashed or killed, no
record left in the registry."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from orchestro.registry import open_registry

pytestmark = pytest.mark.slow

CELL = """
import asyncio
from orchestro import cell, service

@cell("{name}", port=0)
class Trial:
    @service.get("/sleep")
    async def sleep(self, seconds: float) -> str:
        print("handling", flush=True)  # the test signals once a request is in flight
        await asyncio.sleep(seconds)
        return "slept"

    async def on_stop(self) -> None:
        print("on_stop ran", flush=True)
"""

SERVING = re.compile(r"cell (\S+) serving on (http://\S+)")
ADMIN = re.compile(r"admin API on (http://\S+)")
HANDLING = re.compile(r"handling")


class Started:
    """``python -m orchestro ARGS`` in its own session (its own process group, as a shell
    starts a job); stdout and stderr go to files, which the test reads."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    @classmethod
    async def start(cls, *args: str, cwd: Path) -> Started:
        out, err = cwd / "stdout.log", cwd / "stderr.log"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "orchestro",
                *args,
                cwd=str(cwd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return cls(proc, out, err)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    async def wait_for(self, pattern: re.Pattern[str], timeout: float = 60.0) -> re.Match[str]:
        async with asyncio.timeout(timeout):
            while True:
                if match := pattern.search(self.stdout()):
                    return match
                if self.proc.returncode is not None:
                    raise AssertionError(f"exited early: {self.stdout()} {self.stderr()}")
                await asyncio.sleep(0.05)

    def send(self, signum: int, *, group: bool) -> None:
        if group:
            os.killpg(self.proc.pid, signum)  # the terminal's way: every process of the job
        else:
            self.proc.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def exits_with(self, expected: int = 0, timeout: float = 60.0) -> None:
        """Wait for the exit; a different exit code fails with the tail of stderr."""
        code = await self.wait(timeout)
        if code != expected:
            tail = "\n".join(self.stderr().splitlines()[-40:])
            raise AssertionError(f"exit code {code}, expected {expected}; stderr ends:\n{tail}")

    def kill(self) -> None:
        """Clean up after a failed trial (the process and its own group only)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                self.proc.kill()


@dataclass(frozen=True)
class Trial:
    controller: bool
    signum: int
    group: bool
    early: bool = False  # the signal comes as soon as the port is announced

    def describe(self) -> str:
        who = "controller" if self.controller else "single"
        to = "group" if self.group else "alone"
        return f"{who} {signal.Signals(self.signum).name} to {to}{' early' if self.early else ''}"


SINGLE = [
    Trial(False, signal.SIGINT, True),
    Trial(False, signal.SIGTERM, True),
    Trial(False, signal.SIGHUP, True),
    Trial(False, signal.SIGINT, False),
    Trial(False, signal.SIGTERM, False),
]
CONTROLLER = [
    Trial(True, signal.SIGINT, True),
    Trial(True, signal.SIGTERM, True),
    Trial(True, signal.SIGINT, False),
    Trial(True, signal.SIGTERM, False),
    Trial(True, signal.SIGINT, True, early=True),
    Trial(True, signal.SIGHUP, True),
    Trial(True, signal.SIGHUP, False),
]


async def _replicas_ready(session: aiohttp.ClientSession, admin: str, count: int) -> bool:
    async with session.get(f"{admin}/cells") as response:
        (group,) = await response.json()
    return bool(group["ready"] == count == group["actual"])


async def _events(session: aiohttp.ClientSession, admin: str) -> list[dict[str, object]]:
    async with session.get(f"{admin}/events") as response:
        events: list[dict[str, object]] = await response.json()
    return events


async def _until(predicate: object, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def run_trial(trial: Trial, loop: str, number: int, base: Path) -> str | None:
    """One trial; None when clean, else what went wrong."""
    directory = Path(tempfile.mkdtemp(prefix=f"t{number}-", dir=base))
    name = f"trial-{loop}-{number}"
    (directory / "trial.py").write_text(textwrap.dedent(CELL.format(name=name)))
    args = ["run", "trial.py", "--loop", loop, "--drain-timeout", "3"]
    if trial.controller:
        args += ["--replicas", "2"]
    started = await Started.start(*args, cwd=directory)
    problems: list[str] = []
    try:
        url = (await started.wait_for(SERVING)).group(2)
        async with aiohttp.ClientSession() as session:
            admin = ""
            if trial.controller:
                admin = (await started.wait_for(ADMIN)).group(1)
            in_flight = None
            if not trial.early:
                if trial.controller:
                    await _until(lambda: _replicas_ready(session, admin, 2))
                in_flight = asyncio.create_task(
                    session.get(f"{url}/sleep", params={"seconds": "0.5"})
                )
                await started.wait_for(HANDLING)  # the request reached its handler
            started.send(trial.signum, group=trial.group)
            if trial.controller and trial.signum == signal.SIGHUP:
                # A reload: every replica replaced, none crashed; then stop it for real.

                async def rolled() -> bool:
                    return any(e["kind"] == "rolled" for e in await _events(session, admin))

                await _until(rolled)
                started.send(signal.SIGTERM, group=trial.group)
            if trial.controller:
                with_events = await _events_until_exit(session, admin, started)
                bad = [e for e in with_events if e["kind"] in ("crashed", "killed", "hung")]
                if bad:
                    problems.append(f"replica events {bad}")
            code = await started.wait()
            if in_flight is not None:
                response = await in_flight
                if response.status != 200:
                    problems.append(f"in-flight request answered {response.status}")
                response.release()
        if code != 0:
            problems.append(f"exit code {code}")
        if "Traceback" in started.stderr():
            problems.append("a traceback on stderr")
        if not trial.early and not trial.controller and "on_stop ran" not in started.stdout():
            problems.append("on_stop did not run")
        registry = open_registry("local://")
        try:
            left = [i for i in await registry.list() if i.cell == name]
        finally:
            await registry.aclose()
        if left:
            problems.append(f"records left in the registry: {[i.state for i in left]}")
    except (AssertionError, TimeoutError, aiohttp.ClientError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        started.kill()
    if problems:
        return (
            f"{trial.describe()} on {loop}: {'; '.join(problems)}\n"
            f"stdout: {started.stdout()[-2000:]}\nstderr: {started.stderr()[-3000:]}"
        )
    return None


async def _events_until_exit(
    session: aiohttp.ClientSession, admin: str, started: Started
) -> list[dict[str, object]]:
    """The controller's events, followed until it exits (the stream ends then)."""
    seen: list[dict[str, object]] = []
    try:
        async with session.get(
            f"{admin}/events", params={"follow": "1"}, timeout=aiohttp.ClientTimeout(total=60)
        ) as stream:
            async for line in stream.content:
                if line.strip():
                    seen.append(json.loads(line))
    except aiohttp.ClientError:
        pass  # the controller went away after its last events
    return seen


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_signals_as_they_really_arrive_20_of_20(loop: str, tmp_path: Path) -> None:
    pytest.importorskip(loop)
    trials = [*(SINGLE * 2), *(CONTROLLER * 2)][:20]  # 10 single-process, 10 controller
    assert len(trials) == 20
    gate = asyncio.Semaphore(3)  # a loaded 2-core machine: a few at a time

    async def one(number: int, trial: Trial) -> str | None:
        async with gate:
            return await run_trial(trial, loop, number, tmp_path)

    results = await asyncio.gather(*(one(n, t) for n, t in enumerate(trials)))
    failures = [r for r in results if r is not None]
    assert not failures, f"{len(failures)} of 20 not clean:\n" + "\n\n".join(failures)


async def test_double_ctrl_c_on_a_controller_exits_130_and_leaves_no_record(
    tmp_path: Path,
) -> None:
    (tmp_path / "trial.py").write_text(textwrap.dedent(CELL.format(name="double")))
    started = await Started.start(
        "run", "trial.py", "--replicas", "2", "--drain-timeout", "30", cwd=tmp_path
    )
    try:
        url = (await started.wait_for(SERVING)).group(2)
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession() as session:
            await _until(lambda: _replicas_ready(session, admin, 2))
            stuck = [
                asyncio.create_task(session.get(f"{url}/sleep", params={"seconds": "60"}))
                for _ in range(4)
            ]
            async with asyncio.timeout(60):
                while started.stdout().count("handling") < 4:
                    await asyncio.sleep(0.05)
            started.send(signal.SIGINT, group=True)
            await asyncio.sleep(1.5)  # a person, not a duplicate delivery
            assert started.proc.returncode is None  # still draining the stuck requests
            started.send(signal.SIGINT, group=True)
            assert await started.wait(timeout=30) == 130
            for task in stuck:
                with pytest.raises(aiohttp.ClientError):
                    await task
        registry = open_registry("local://")
        try:
            left = [i for i in await registry.list() if i.cell == "double"]
        finally:
            await registry.aclose()
        assert left == []  # deregistered on the way out, not left "draining" until the TTL
        assert "Traceback" not in started.stderr()
    finally:
        started.kill()


async def test_a_cell_that_cannot_register_says_so_once_on_the_terminal(
    tmp_path: Path,
) -> None:
    (tmp_path / "trial.py").write_text(textwrap.dedent(CELL.format(name="lonely")))
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    started = await Started.start(
        "run", "trial.py", "--registry", "etcd://127.0.0.1:9", "--registry-ttl", "3", cwd=tmp_path
    )
    try:
        await started.wait_for(SERVING)
        await asyncio.sleep(3)  # a few failed keep-alives: still one line
        started.send(signal.SIGTERM, group=False)
        await started.exits_with(0)
        lines = [line for line in started.stdout().splitlines() if "warning:" in line]
        assert len(lines) == 1, started.stdout()
        assert "etcd://127.0.0.1:9" in lines[0]
        assert "callers cannot find it" in lines[0]
        assert "unreachable" in started.stderr()  # and the JSON warning, as before
    finally:
        started.kill()


async def test_an_open_event_stream_does_not_hold_the_controller_s_exit(tmp_path: Path) -> None:
    (tmp_path / "trial.py").write_text(textwrap.dedent(CELL.format(name="followed")))
    started = await Started.start(
        "run", "trial.py", "--replicas", "1", "--drain-timeout", "2", cwd=tmp_path
    )
    try:
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession() as session:
            await _until(lambda: _replicas_ready(session, admin, 1))
            # A follower that goes away without a word: the stream's next write finds its
            # connection closed, which is no error of the controller's.
            async with (
                aiohttp.ClientSession() as leaving,
                leaving.get(f"{admin}/events", params={"follow": "1"}) as gone,
            ):
                await gone.content.readline()
            async with session.get(f"{admin}/events", params={"follow": "1"}) as stream:
                await stream.content.readline()
                loop = asyncio.get_running_loop()
                began = loop.time()
                started.send(signal.SIGINT, group=True)
                # The stream ends (after the last events) and the controller exits: well
                # within its drain deadline plus margin, not the 61 s it took before.
                assert await started.wait(timeout=45) == 0
                tail = await asyncio.wait_for(stream.content.read(), timeout=10)
        assert b'"stopped"' in tail
        assert "Traceback" not in started.stderr(), started.stderr()  # a stream ends quietly
        print(f"controller exit with a follower: {loop.time() - began:.1f} s")
    finally:
        started.kill()


BLOCKING = """
import time
from orchestro import cell, service

@cell("blocker", port=0)
class Blocker:
    @service.get("/block")
    async def block(self) -> int:
        time.sleep(120)  # blocks the replica's loop: it hangs, the controller kills it
        return 1
"""


async def test_the_controller_removes_the_records_of_a_replica_it_had_to_kill(
    tmp_path: Path,
) -> None:
    (tmp_path / "blocker.py").write_text(textwrap.dedent(BLOCKING))
    # A TTL far longer than the test: only the controller can have removed the record.
    started = await Started.start(
        "run", "blocker.py", "--replicas", "1", "--registry-ttl", "120", cwd=tmp_path
    )
    registry = open_registry("local://")
    try:
        url = (await started.wait_for(SERVING)).group(2)
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession() as session:
            await _until(lambda: _replicas_ready(session, admin, 1))
            async with session.get(f"{admin}/cells") as response:
                (group,) = await response.json()
            pid = group["replicas"][0]["pid"]

            async def registered() -> bool:
                return any(i.pid == pid for i in await registry.list())

            await _until(registered)
            # A raw request: a client that retried it would block the replacement too.
            host, port = url.removeprefix("http://").rsplit(":", 1)
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()

            async def killed() -> bool:
                return any(
                    e["kind"] == "crashed" and e["replica"] == 0
                    for e in await _events(session, admin)
                )

            await _until(killed)

            async def forgotten() -> bool:
                return not await registered()

            await _until(forgotten, timeout=30)
            writer.close()
            started.send(signal.SIGTERM, group=False)
            await started.exits_with(0)
    finally:
        await registry.aclose()
        started.kill()


async def test_the_admin_api_refuses_what_a_web_page_can_send(tmp_path: Path) -> None:
    # A cross-site fetch(url, {method: "POST", mode: "no-cors", body}) is a "simple" request
    # (text/plain, no preflight): the browser sends it with an Origin header, and the admin
    # API used to act on it (a page could restart or scale this machine's cells). A page
    # that rebinds its DNS name to 127.0.0.1 sends that name in Host.
    (tmp_path / "trial.py").write_text(textwrap.dedent(CELL.format(name="paged")))
    started = await Started.start("run", "trial.py", "--replicas", "2", cwd=tmp_path)
    try:
        admin = (await started.wait_for(ADMIN)).group(1)
        async with aiohttp.ClientSession() as session:
            await _until(lambda: _replicas_ready(session, admin, 2))
            async with session.get(f"{admin}/cells") as answer:
                (before,) = await answer.json()
            page = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
            for path, body in (
                ("/cells/paged/scale", b'{"replicas": 1}'),
                ("/cells/paged/replicas/0/restart", b""),
            ):
                async with session.post(f"{admin}{path}", data=body, headers=page) as answer:
                    assert answer.status == 403, await answer.text()
                    assert "not web pages" in (await answer.json())["detail"]
            port = admin.rpartition(":")[2]
            rebound = {"Host": f"evil.example:{port}"}
            async with session.get(f"{admin}/cells", headers=rebound) as answer:
                assert answer.status == 403
            async with session.get(f"{admin}/cells") as answer:
                (group,) = await answer.json()
            assert group["desired"] == 2
            assert [r["pid"] for r in group["replicas"]] == [r["pid"] for r in before["replicas"]]
        # The CLI's own requests are served.
        scaled = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestro",
            "scale",
            "--admin",
            admin,
            "paged",
            "1",
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await scaled.wait() == 0
        async with aiohttp.ClientSession() as session, session.get(f"{admin}/cells") as answer:
            (group,) = await answer.json()
        assert group["desired"] == 1
        started.send(signal.SIGTERM, group=True)
        assert await started.wait(timeout=45) == 0
    finally:
        started.kill()
