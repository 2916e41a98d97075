"""``python -m orchestro run`` as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import textwrap
from pathlib import Path

import aiohttp
import pytest

from ..conftest import Cli, run_cli, start_cli

pytestmark = pytest.mark.slow

SLOW_CELL = """
import asyncio
from orchestro import cell, service

@cell("slow", port=0)
class Slow:
    @service.get("/sleep")
    async def sleep(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    async def on_stop(self) -> None:
        print("on_stop ran", flush=True)
"""

TWO_CELLS = """
from orchestro import cell, service

@cell("one", port=0)
class One:
    @service.get("/who")
    async def who(self) -> str:
        return "one"

@cell("two", port=0)
class Two:
    @service.get("/who")
    async def who(self) -> str:
        return "two"
"""


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


async def test_hello_example_greets(cli_processes: list[Cli]) -> None:
    cli = await start_cli("run", "examples/hello.py", "--port", "0")
    cli_processes.append(cli)
    urls = await cli.wait_serving()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{urls['greeter']}/greet") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"message": "Hello from Orchestro Cell!"}
    cli.signal(signal.SIGINT)
    await cli.exits_with(0)


async def test_every_cell_gets_its_own_port_and_cell_selects(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    target = write(tmp_path, "pair.py", TWO_CELLS)
    cli = await start_cli("run", str(target))
    cli_processes.append(cli)
    urls = await cli.wait_serving(2)
    assert urls["one"] != urls["two"]
    async with aiohttp.ClientSession() as session:
        for name, url in urls.items():
            async with session.get(f"{url}/who") as response:
                assert await response.json() == name
    cli.signal()
    await cli.exits_with(0)
    # Each cell's own lines (draining, stopped) carry that cell, not the process's first.
    records = [json.loads(line) for line in (await cli.stderr()).splitlines()]
    lifecycle = [r for r in records if r["message"] in ("cell two draining", "cell two stopped")]
    assert len(lifecycle) == 2, records
    assert {r["cell"] for r in lifecycle} == {"two"}
    assert all(r["instance"].startswith("two-") for r in lifecycle)

    only = await start_cli("run", str(target), "--cell", "two")
    cli_processes.append(only)
    assert list(await only.wait_serving()) == ["two"]
    only.signal()
    await only.exits_with(0)
    assert "one" not in await only.rest_of_stdout()


async def test_sigterm_drains_in_flight_requests(tmp_path: Path, cli_processes: list[Cli]) -> None:
    target = write(tmp_path, "slow.py", SLOW_CELL)
    cli = await start_cli("run", str(target))
    cli_processes.append(cli)
    url = (await cli.wait_serving())["slow"]
    port = int(url.rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as session:

        async def call() -> tuple[int, str]:
            async with session.get(f"{url}/sleep", params={"seconds": "1.5"}) as response:
                return response.status, await response.json()

        in_flight = [asyncio.create_task(call()) for _ in range(4)]
        await asyncio.sleep(0.5)  # let the requests reach the handler
        cli.signal(signal.SIGTERM)
        refused = False
        async with asyncio.timeout(10):
            while not refused:  # the listener closes while the requests are still running
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await asyncio.sleep(0.02)
                except ConnectionRefusedError:
                    refused = True
        assert not any(task.done() for task in in_flight)
        assert await asyncio.gather(*in_flight) == [(200, "slept")] * 4
    await cli.exits_with(0)
    out = await cli.rest_of_stdout()
    assert "SIGTERM: draining" in out
    assert "on_stop ran" in out


async def test_second_sigint_forces_exit(tmp_path: Path, cli_processes: list[Cli]) -> None:
    target = write(tmp_path, "slow.py", SLOW_CELL)
    cli = await start_cli("run", str(target))
    cli_processes.append(cli)
    url = (await cli.wait_serving())["slow"]
    async with aiohttp.ClientSession() as session:
        stuck = asyncio.create_task(session.get(f"{url}/sleep", params={"seconds": "60"}))
        await asyncio.sleep(0.3)
        cli.signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        cli.signal(signal.SIGINT)  # within a second of the first: a duplicate, ignored
        await asyncio.sleep(1.5)
        assert cli.proc.returncode is None  # still draining
        cli.signal(signal.SIGINT)  # a person's second Ctrl-C
        assert await cli.wait(timeout=20) == 130
        with pytest.raises(aiohttp.ClientError):
            await stuck


async def test_settings_from_flags_and_environment(
    tmp_path: Path, cli_processes: list[Cli]
) -> None:
    target = write(tmp_path, "pair.py", TWO_CELLS)
    cli = await start_cli(
        "run",
        str(target),
        "--cell",
        "one",
        "--max-concurrency",
        "3",
        env={"ORCHESTRO_MAX_BODY_SIZE": "2KiB"},
    )
    cli_processes.append(cli)
    url = (await cli.wait_serving())["one"]
    async with aiohttp.ClientSession() as session, session.get(f"{url}/who") as response:
        assert response.status == 200
    cli.signal()
    await cli.exits_with(0)


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


ERROR_CASES = {
    "missing file": (["run", "nowhere/cells.py"], "file 'nowhere/cells.py' does not exist"),
    "missing module": (["run", "nowhere_pkg.cells"], "there is no module 'nowhere_pkg'"),
    "no cells": (["run", "orchestro.errors"], "no cells in 'orchestro.errors'"),
    "unknown cell": (["run", "examples/hello.py", "--cell", "nope"], "no cell named 'nope'"),
    "port for many cells": (
        ["run", "{pair}", "--port", "8000"],
        "--port sets one cell's port, but '{pair}' has 2 cells: add --cell NAME",
    ),
    "bad setting": (
        ["run", "examples/hello.py", "--max-body-size", "lots"],
        "--max-body-size: could not parse value and unit from byte string (got 'lots')",
    ),
    "bad environment": (
        ["run", "examples/hello.py", "ENV:ORCHESTRO_DRAIN_TIMEOUT=-1"],
        "ORCHESTRO_DRAIN_TIMEOUT: Input should be greater than 0",
    ),
    "bad sampler": (
        ["run", "examples/hello.py", "ENV:OTEL_TRACES_SAMPLER=sometimes"],
        "OTEL_TRACES_SAMPLER='sometimes' is not supported: use parentbased_always_on, ",
    ),
    "bad sampler ratio": (
        [
            "run",
            "examples/hello.py",
            "ENV:OTEL_TRACES_SAMPLER=traceidratio",
            "ENV:OTEL_TRACES_SAMPLER_ARG=10%",
        ],
        "OTEL_TRACES_SAMPLER_ARG='10%' is not a ratio: use a number from 0 to 1",
    ),
    "bad exporter": (
        ["run", "examples/hello.py", "ENV:OTEL_TRACES_EXPORTER=jaeger"],
        "OTEL_TRACES_EXPORTER='jaeger' is not supported: use otlp, console or none",
    ),
    "failing on_start": (
        ["run", "{failing}"],
        "cell 'failing' failed to start: on_start raised ConnectionError: database down (at ",
    ),
    "bad declaration": (
        ["run", "{baddecl}"],
        "Bad.get: path 'x' must start with '/', e.g. '/orders'",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
async def test_errors_are_one_line_with_exit_code_2(case: str, tmp_path: Path) -> None:
    files = {
        "pair": write(tmp_path, "pair.py", TWO_CELLS),
        "failing": write(
            tmp_path,
            "failing.py",
            """
            from orchestro import cell

            @cell("failing", port=0)
            class Failing:
                async def on_start(self) -> None:
                    raise ConnectionError("database down")
            """,
        ),
        "baddecl": write(
            tmp_path,
            "baddecl.py",
            """
            from orchestro import cell, service

            @cell("bad")
            class Bad:
                @service.get("x")
                async def get(self) -> None: ...
            """,
        ),
    }
    argv, message = ERROR_CASES[case]
    env: dict[str, str] = {}
    args = []
    for arg in argv:
        if arg.startswith("ENV:"):
            key, _, value = arg[4:].partition("=")
            env[key] = value
        else:
            args.append(arg.format(**{k: str(v) for k, v in files.items()}))
    code, out, err = await run_cli(*args, env=env)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("orchestro: error: ")
    assert message.format(**{k: str(v) for k, v in files.items()}) in lines[0]
    assert "Traceback" not in err


async def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        code, _, err = await run_cli("run", "examples/hello.py", "--port", str(port))
    assert code == 2
    assert err.strip() == (
        f"orchestro: error: cannot start cell 'greeter': port {port} on 127.0.0.1 is in use; "
        "stop the process using it, or choose another port with --port or @cell(port=...) "
        "(0 picks a free one)"
    )


async def test_import_error_inside_user_module_keeps_its_traceback(tmp_path: Path) -> None:
    target = write(tmp_path, "needs.py", "import definitely_not_installed_pkg\n")
    code, _, err = await run_cli("run", str(target))
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "needs.py" in err
    assert "No module named 'definitely_not_installed_pkg'" in err


async def test_usage_errors_and_version() -> None:
    code, _, err = await run_cli("run")
    assert code == 2
    assert "the following arguments are required: TARGET" in err
    code, out, _ = await run_cli("--version")
    assert (code, out.split()[0]) == (0, "orchestro")
