"""The controller from the outside: replica processes behind one port, restarted, scaled and
drained without failing a caller's idempotent request."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestro import Mesh
from orchestro.registry import open_registry

from ..conftest import Cli, run_cli, start_cli

pytestmark = pytest.mark.slow


def admin_url(cli: Cli) -> str:
    for line in cli.stdout:
        if match := re.search(r"admin API on (http://\S+)", line):
            return match.group(1)
    raise AssertionError(f"no admin URL in {cli.stdout}")


async def cells(session: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/cells") as response:
        return {c["cell"]: c for c in await response.json()}


async def until(predicate: Any, timeout: float = 20.0, every: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(every)


class Callers:
    """Mesh callers of the greeter at a fixed concurrency, counting failures."""

    def __init__(self, mesh: Mesh, concurrency: int = 8) -> None:
        from examples.hello import Greeter

        self.greeter = mesh.client(Greeter)
        self.ok = 0
        self.failures: list[BaseException] = []
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(concurrency)]

    async def _loop(self) -> None:
        while True:
            try:
                await self.greeter.greet()
                self.ok += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures.append(exc)
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    calls = Mesh(open_registry("local://"))
    await calls.start()
    yield calls
    await calls.aclose()


async def start_controller(*args: str, count: int = 1) -> Cli:
    cli = await start_cli("run", *args)
    await cli.wait_serving(count)
    return cli


async def test_replicas_share_one_port_and_register_one_by_one(
    cli_processes: list[Cli],
) -> None:
    controller = await start_controller("examples/hello.py", "--port", "0", "--replicas", "2")
    cli_processes.append(controller)
    public = controller.urls["greeter"]
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 2))
        for _ in range(20):
            async with session.get(f"{public}/greet") as response:
                assert response.status == 200
        state = (await cells(session, admin))["greeter"]
    private = {r["url"] for r in state["replicas"]}
    assert len(private) == 2
    assert public not in private
    code, out, _ = await run_cli("ls", "--json")
    assert code == 0
    listed = {i["url"] for i in json.loads(out) if i["cell"] == "greeter"}
    assert private <= listed  # each replica is its own instance for mesh callers
    code, out, _ = await run_cli("status")
    assert code == 0
    assert re.search(r"greeter\s+\d+\s+2\s+2\s+2", out), out
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def _ready(session: aiohttp.ClientSession, admin: str, cell: str, count: int) -> bool:
    state = (await cells(session, admin))[cell]
    return bool(state["ready"] == count == state["actual"])


async def test_a_killed_replica_is_replaced_and_callers_see_no_failure(
    cli_processes: list[Cli], mesh: Mesh
) -> None:
    controller = await start_controller("examples/hello.py", "--port", "0", "--replicas", "2")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 2))
        await until(lambda: _instances(mesh, 2))
        callers = Callers(mesh)
        await until(lambda: _served(callers, 100))
        victim = (await cells(session, admin))["greeter"]["replicas"][0]
        import os

        os.kill(victim["pid"], signal.SIGKILL)
        await until(lambda: _replaced(session, admin, victim["pid"]))
        before = callers.ok
        await until(lambda: _served(callers, before + 100))
        await callers.stop()
        async with session.get(f"{admin}/events") as response:
            kinds = [(e["kind"], e["replica"]) for e in await response.json()]
    assert callers.failures == []
    assert ("crashed", victim["index"]) in kinds
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def _instances(mesh: Mesh, count: int) -> bool:
    return len(mesh.view.ready("greeter")) == count


async def _served(callers: Callers, count: int) -> bool:
    return callers.ok >= count


async def _replaced(session: aiohttp.ClientSession, admin: str, pid: int) -> bool:
    state = (await cells(session, admin))["greeter"]
    pids = {r["pid"] for r in state["replicas"] if r["state"] == "ready"}
    return len(pids) == 2 and pid not in pids


async def test_scale_down_drains_without_failing_a_caller(
    cli_processes: list[Cli], mesh: Mesh
) -> None:
    controller = await start_controller("examples/hello.py", "--port", "0", "--replicas", "3")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 3))
        await until(lambda: _instances(mesh, 3))
        callers = Callers(mesh)
        await until(lambda: _served(callers, 100))
        code, out, err = await run_cli("scale", "greeter", "1")
        assert code == 0, err
        assert "desired 1 replica (" in out
        await until(lambda: _ready(session, admin, "greeter", 1))
        await until(lambda: _instances(mesh, 1))
        before = callers.ok
        await until(lambda: _served(callers, before + 100))
        await callers.stop()
    assert callers.failures == []
    code, _, err = await run_cli("scale", "greeter", "0")
    assert code == 2
    assert "between 1 and 256" in err
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


CRASHING = """
from orchestro import cell, service


@cell("crasher", port=0)
class Crasher:
    async def on_start(self) -> None:
        raise RuntimeError("cannot reach the database")

    @service.get("/x")
    async def x(self) -> int:
        return 1
"""


async def test_a_crash_loop_backs_off_exponentially(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    module = tmp_path / "crasher.py"
    module.write_text(textwrap.dedent(CRASHING))
    controller = await start_controller(str(module), "--replicas", "1")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:

        async def delayed_three_times() -> bool:
            async with session.get(f"{admin}/events") as response:
                events = await response.json()
            return sum(e["kind"] == "restart-delayed" for e in events) >= 3

        await until(delayed_three_times, timeout=30)
        async with session.get(f"{admin}/events") as response:
            events = await response.json()
    delays = [e["data"]["delay"] for e in events if e["kind"] == "restart-delayed"]
    assert delays[:3] == [0.5, 1.0, 2.0]
    crashes = [e for e in events if e["kind"] == "crashed"]
    assert crashes[0]["data"]["exit_code"] == 2  # on_start failed: a clear StartupError
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def test_sighup_rolls_every_replica_without_failing_a_caller(
    tmp_path: Path, cli_processes: list[Cli], mesh: Mesh
) -> None:
    from ..conftest import ROOT

    config = tmp_path / "orchestro.toml"
    config.write_text("[scaling.cells.greeter]\nmin = 2\nmax = 2\n")
    controller = await start_cli(
        "run", str(ROOT / "examples" / "hello.py"), "--port", "0", cwd=tmp_path
    )
    cli_processes.append(controller)
    await controller.wait_serving()
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 2))
        await until(lambda: _instances(mesh, 2))
        old = {r["pid"] for r in (await cells(session, admin))["greeter"]["replicas"]}
        callers = Callers(mesh)
        await until(lambda: _served(callers, 100))
        controller.signal(signal.SIGHUP)

        async def rolled() -> bool:
            state = (await cells(session, admin))["greeter"]
            pids = {r["pid"] for r in state["replicas"] if r["state"] == "ready"}
            return len(pids) == 2 and not pids & old and state["actual"] == 2

        await until(rolled, timeout=30)
        before = callers.ok
        await until(lambda: _served(callers, before + 100))
        await callers.stop()
        async with session.get(f"{admin}/events") as response:
            kinds = [e["kind"] for e in await response.json()]
        # A bad file on reload: said, and nothing changes.
        config.write_text("[scaling.cells.greeter]\nmin = 2\nmax = 1\n")
        controller.signal(signal.SIGHUP)

        async def refused() -> bool:
            async with session.get(f"{admin}/events") as response:
                return any(e["kind"] == "reload-failed" for e in await response.json())

        await until(refused)
    assert callers.failures == []
    assert "reloaded" in kinds
    assert "rolled" in kinds
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def test_sighup_applies_a_changed_count_and_changed_bounds(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    from ..conftest import ROOT

    config = tmp_path / "orchestro.toml"
    config.write_text("[scaling.cells.greeter]\nmin = 2\nmax = 2\n")
    controller = await start_cli(
        "run", str(ROOT / "examples" / "hello.py"), "--port", "0", cwd=tmp_path
    )
    cli_processes.append(controller)
    await controller.wait_serving()
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 2))
        code, out, _ = await run_cli("status", cwd=tmp_path)
        assert code == 0, out
        assert " fixed " in out, out  # not the 1..256 that `scale` may set
        # A fixed count changed in the file: the new count, once rolled.
        config.write_text("[scaling.cells.greeter]\nmin = 1\nmax = 1\n")
        controller.signal(signal.SIGHUP)

        async def one() -> bool:
            state = (await cells(session, admin))["greeter"]
            ready = [r for r in state["replicas"] if r["state"] == "ready"]
            return state["desired"] == 1 and len(ready) == 1 and state["actual"] == 1

        await until(one, timeout=30)
        # Bounds instead of a count: the cell auto-scales within them from now on.
        config.write_text("[scaling.cells.greeter]\nmin = 2\nmax = 3\n")
        controller.signal(signal.SIGHUP)

        async def bounded() -> bool:
            state = (await cells(session, admin))["greeter"]
            return (
                state["autoscaling"]
                and (state["min"], state["max"]) == (2, 3)
                and state["desired"] == 2
            )

        await until(bounded, timeout=30)
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def test_a_bad_scaling_table_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from ..conftest import ROOT

    (tmp_path / "orchestro.toml").write_text("[scaling.cells.greeter]\nmax = 0\nmin_replicas = 1\n")
    code, _, err = await run_cli(
        "run", str(ROOT / "examples" / "hello.py"), "--replicas", "2", cwd=tmp_path
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "orchestro.toml: [scaling.cells.greeter]: unknown key(s) min_replicas" in line


HOOKED = """
from orchestro import cell, controller, service


@cell("hooked", port=0)
class Hooked:
    @service.get("/x")
    async def x(self) -> int:
        return 1


@controller.on_event
def second_replica_once_the_first_is_ready(event, actions):
    if event.kind == "ready" and event.replica == 0:
        actions.scale("hooked", 2)
"""


async def test_a_hook_requests_an_action_and_metrics_count_events(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    from orchestro.testing import Metrics

    module = tmp_path / "hooked.py"
    module.write_text(textwrap.dedent(HOOKED))
    controller = await start_controller(str(module), "--replicas", "1")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "hooked", 2))
        async with session.get(f"{admin}/metrics") as response:
            page = Metrics(await response.text())
    assert page.value("orchestro_controller_replicas_desired", orchestro_cell="hooked") == 2
    assert page.value("orchestro_controller_replicas_ready", orchestro_cell="hooked") == 2
    assert (
        page.value(
            "orchestro_controller_events_total", orchestro_cell="hooked", orchestro_event="scaled"
        )
        == 1
    )
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def test_events_stream_as_they_happen(cli_processes: list[Cli]) -> None:
    controller = await start_controller("examples/hello.py", "--port", "0", "--replicas", "1")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 1))
        async with session.get(f"{admin}/events", params={"follow": "1"}) as stream:
            seen = [json.loads(await stream.content.readline()) for _ in range(2)]
            assert [e["kind"] for e in seen] == ["started", "ready"]
            code, _, err = await run_cli("scale", "greeter", "2")
            assert code == 0, err
            async with asyncio.timeout(10):
                while True:
                    event = json.loads(await stream.content.readline())
                    if event["kind"] == "scaled":
                        break
    assert event["data"] == {"previous": 1, "desired": 2, "source": "manual"}
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


HANGING = """
import time

from orchestro import cell, service


@cell("hanger", port=0)
class Hanger:
    @service.get("/hang")
    async def hang(self) -> int:
        time.sleep(60)  # blocks the event loop: the replica stops answering pings
        return 1
"""


async def test_a_hung_replica_is_killed_and_replaced(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    module = tmp_path / "hanger.py"
    module.write_text(textwrap.dedent(HANGING))
    controller = await start_controller(str(module), "--replicas", "1")
    cli_processes.append(controller)
    admin = admin_url(controller)
    public = controller.urls["hanger"]
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "hanger", 1))
        (first,) = (await cells(session, admin))["hanger"]["replicas"]
        hang = asyncio.create_task(session.get(f"{public}/hang"))

        async def replaced() -> bool:
            state = (await cells(session, admin))["hanger"]
            return any(
                r["state"] == "ready" and r["pid"] != first["pid"] for r in state["replicas"]
            )

        await until(replaced, timeout=30)  # a replacement serves at once,
        hang.cancel()

        async def killed() -> bool:  # and the hung one gets SIGKILL after the grace period
            async with session.get(f"{admin}/events") as response:
                return any(
                    (e["kind"], e["replica"], e["detail"]) == ("crashed", 0, "killed by SIGKILL")
                    for e in await response.json()
                )

        await until(killed, timeout=30)
        async with session.get(f"{admin}/events") as response:
            kinds = [(e["kind"], e["replica"]) for e in await response.json()]
    assert kinds.index(("hung", 0)) < kinds.index(("ready", 1)) < kinds.index(("crashed", 0))
    controller.signal(signal.SIGTERM)
    await controller.exits_with(0)


async def test_replicas_leave_with_a_killed_controller(cli_processes: list[Cli]) -> None:
    import os

    controller = await start_controller("examples/hello.py", "--port", "0", "--replicas", "2")
    cli_processes.append(controller)
    admin = admin_url(controller)
    async with aiohttp.ClientSession() as session:
        await until(lambda: _ready(session, admin, "greeter", 2))
        pids = [r["pid"] for r in (await cells(session, admin))["greeter"]["replicas"]]
    controller.proc.kill()
    await controller.wait()

    async def gone() -> bool:
        alive = 0
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive += 1
            except ProcessLookupError:
                pass
        return alive == 0

    await until(gone, timeout=30)  # drained and exited: no orphans serving stale code
