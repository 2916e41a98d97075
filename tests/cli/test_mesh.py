"""The mesh from the outside: a frontend and a greeter in two processes, no configuration."""

from __future__ import annotations

import signal

import aiohttp
import pytest

from ..conftest import Cli, start_cli

pytestmark = pytest.mark.slow


async def test_frontend_calls_greeter_across_processes(cli_processes: list[Cli]) -> None:
    greeter = await start_cli("run", "examples/hello.py", "--port", "0")
    cli_processes.append(greeter)
    await greeter.wait_serving()
    frontend = await start_cli("run", "examples/frontend.py", "--port", "0")
    cli_processes.append(frontend)
    url = (await frontend.wait_serving())["frontend"]
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # the frontend's view may take a poll to see the greeter
            async with session.get(f"{url}/hello/Ada") as response:
                if response.status == 200:
                    assert await response.json() == {"message": "Hello Ada from Orchestro Cell!"}
                    break
        else:
            raise AssertionError("the frontend never reached the greeter")

        greeter.signal(signal.SIGTERM)
        assert await greeter.wait() == 0
        async with session.get(f"{url}/hello/Ada") as response:
            assert response.status == 503  # no greeter left: a clear answer, not a hang
            assert (await response.json())["detail"].startswith("the greeter is unavailable")
    frontend.signal()
    assert await frontend.wait() == 0
