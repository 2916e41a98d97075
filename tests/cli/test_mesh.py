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
    # A call waits this long for a greeter to (re)appear before failing (default 10 s).
    wait = {"ORCHESTRO_MESH_WAIT_FOR_INSTANCES": "0.5"}
    frontend = await start_cli("run", "examples/frontend.py", "--port", "0", env=wait)
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
        await greeter.exits_with(0)
        async with session.get(f"{url}/hello/Ada") as response:
            assert response.status == 503  # no greeter came back: a clear answer, not a hang
            assert (await response.json())["detail"].startswith("the greeter is unavailable")
    frontend.signal()
    await frontend.exits_with(0)


async def checkout(
    session: aiohttp.ClientSession, url: str, sku: str, quantity: int
) -> tuple[int, dict[str, object]]:
    async with session.post(f"{url}/checkout", json={"sku": sku, "quantity": quantity}) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    "split",
    [
        [[]],  # every cell in one process: calls take the in-process path
        [
            ["--cell", "inventory", "--cell", "payments"],
            ["--cell", "orders"],
            ["--cell", "storefront"],
        ],
    ],
    ids=["one-process", "three-processes"],
)
async def test_the_shop(split: list[list[str]], cli_processes: list[Cli]) -> None:
    urls: dict[str, str] = {}
    for flags in split:
        # the example's fixed ports (8090-8093): these tests run one at a time
        cli = await start_cli(
            "run", "examples/shop.py", *flags, env={"ORCHESTRO_HOST": "127.0.0.1"}
        )
        cli_processes.append(cli)
        urls.update(await cli.wait_serving(len([f for f in flags if f == "--cell"]) or 4))
    store = urls["storefront"]
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # views may take a poll to see cells started elsewhere
            status, body = await checkout(session, store, "tea", 2)
            if status != 503:
                break
        assert status == 201, body
        assert body["amount_cents"] == 900
        status, body = await checkout(session, store, "pot", 3)
        assert (status, body["detail"]) == (409, "only 2 pot left")
        status, body = await checkout(session, store, "cup", 9)  # over the payment limit
        assert status == 409
        assert str(body["detail"]).startswith("payment failed: declined")
        async with session.get(f"{store}/products/cup") as response:
            assert (await response.json())["available"] == 12  # the reservation was undone
    for cli in cli_processes:
        cli.signal()
        await cli.exits_with(0)
