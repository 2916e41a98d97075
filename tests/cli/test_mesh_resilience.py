"""The mesh against real processes: a killed instance, a slow one, a failing one."""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from orchestro import CallPolicy, Mesh, RemoteError
from orchestro.registry import RegistryView, open_registry

from ..conftest import Cli, start_cli

pytestmark = pytest.mark.slow

BACKEND = """
import asyncio, os
from orchestro import HTTPError, cell, service

DELAY = float(os.environ.get("BACKEND_DELAY", "0"))
FAIL = os.environ.get("BACKEND_FAIL")  # a file: while it exists, answer 503

@cell("backend", port=0)
class Backend:
    @service.get("/who")
    async def who(self) -> int:
        if FAIL and os.path.exists(FAIL):
            raise HTTPError(503, "failing on purpose")
        await asyncio.sleep(DELAY)
        return os.getpid()
"""


async def start_backends(
    tmp_path: Path, cli_processes: list[Cli], envs: list[dict[str, str]], registry: str
) -> list[Cli]:
    target = tmp_path / "backend.py"
    target.write_text(textwrap.dedent(BACKEND))
    started = []
    for env in envs:
        cli = await start_cli(
            "run", str(target), "--registry", registry, "--registry-ttl", "2", env=env
        )
        cli_processes.append(cli)
        started.append(cli)
    for cli in started:
        await cli.wait_serving()
    return started


async def connect(registry: str, count: int, **policy: object) -> Mesh:
    view = RegistryView(open_registry(registry))
    calls = Mesh(view, policy=CallPolicy(**policy))  # type: ignore[arg-type]
    await calls.start()
    async with asyncio.timeout(10):
        await view.wait_for(lambda v: len(v.ready("backend")) == count)
    return calls


async def close(calls: Mesh) -> None:
    await calls.aclose()
    await calls.view.aclose()
    await calls.view.registry.aclose()


async def test_sigkill_of_one_instance_under_load_fails_no_call(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    registry = f"local://{tmp_path}/registry.db"
    backends = await start_backends(tmp_path, cli_processes, [{}, {}, {}], registry)
    calls = await connect(registry, 3)
    raw = calls.client("backend")
    answers: Counter[int] = Counter()
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                answers[await raw.get("/who")] += 1
            except Exception as exc:
                failures.append(exc)

    workers = [asyncio.create_task(worker()) for _ in range(32)]
    await asyncio.sleep(1.0)
    victim = backends[0]
    victim.proc.send_signal(signal.SIGKILL)
    await asyncio.sleep(3.0)  # past the TTL: the registry forgets it too
    stop.set()
    await asyncio.gather(*workers)
    await close(calls)
    assert failures == []
    assert victim.proc.pid in answers  # it served before it died
    assert {b.proc.pid for b in backends[1:]} <= set(answers)


async def test_traffic_shifts_away_from_a_slow_instance(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    registry = f"local://{tmp_path}/registry.db"
    backends = await start_backends(
        tmp_path, cli_processes, [{"BACKEND_DELAY": "0.2"}, {}, {}], registry
    )
    calls = await connect(registry, 3)
    raw = calls.client("backend")
    answers: Counter[int] = Counter()

    async def worker() -> None:
        for _ in range(40):
            answers[await raw.get("/who")] += 1

    await asyncio.gather(*(worker() for _ in range(8)))
    await close(calls)
    slow = answers[backends[0].proc.pid]
    assert sum(answers.values()) == 320
    assert slow < 320 / 3 / 4, answers  # far below a fair third


async def test_a_failing_instance_is_ejected_and_probed_back(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    registry = f"local://{tmp_path}/registry.db"
    switch = tmp_path / "fail-now"
    switch.write_text("on")
    backends = await start_backends(
        tmp_path, cli_processes, [{"BACKEND_FAIL": str(switch)}, {}], registry
    )
    # Round robin, so the failing instance keeps being chosen until ejection stops it (P2C
    # would mostly avoid it by latency alone, which is a different test).
    calls = await connect(
        registry,
        2,
        balancer="round-robin",
        consecutive_failures=3,
        base_ejection=1.0,
        max_ejected_share=0.5,
    )
    raw = calls.client("backend")
    failing = backends[0].proc.pid
    for _ in range(30):
        assert await raw.get("/who") != failing  # retried elsewhere; never surfaces
    target = calls.target_state("backend")
    ids = [i.id for i in calls.view.ready("backend") if i.pid == failing]
    assert target.detector.state(ids[0]) == "open"  # ejected

    switch.unlink()  # it recovers
    await asyncio.sleep(1.2)  # the ejection ends: half-open
    seen: Counter[int] = Counter()
    for _ in range(60):
        seen[await raw.get("/who")] += 1
    assert target.detector.state(ids[0]) == "closed"
    assert seen[failing] > 0  # probed back and taking traffic again
    with pytest.raises(RemoteError):
        await raw.get("/missing")
    await close(calls)
