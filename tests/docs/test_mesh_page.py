"""The code of docs/concepts/mesh.md, run (the page shows these sections: see
tests/docs/blocks.py)."""

import pytest
from examples.frontend import Frontend
from examples.hello import Greeter, Greeting

from orchestro import Mesh, cell, mesh, service
from orchestro.testing import CellClient, FaultInjector, MockTransport, make_cell


# --8<-- [start:plain_code]
async def main(registry: str = "local://") -> None:
    async with Mesh(registry) as calls:
        greeter = calls.client(Greeter)
        print(await greeter.greet(name="Ada"))


# --8<-- [end:plain_code]


async def test_plain_code_calls_the_greeter(capsys: pytest.CaptureFixture[str]) -> None:
    async with CellClient(Greeter) as greeter:
        await main(f"static://greeter={greeter.url}")
    assert capsys.readouterr().out == "message='Hello Ada from Orchestro Cell!'\n"


# --8<-- [start:fake_client]
class FakeGreeter:
    async def greet(self, name: str = "world") -> Greeting:
        return Greeting(message=f"Hi {name}")


async def test_frontend_with_a_fake_greeter(cell_client):
    frontend = make_cell(Frontend, greeter=FakeGreeter())
    client = await cell_client(frontend)
    response = await client.get("/hello/Ada")
    assert response.json() == {"message": "Hi Ada"}


# --8<-- [end:fake_client]


@cell("polite")
class Polite:
    # --8<-- [start:fallback]
    greeter = mesh.client(
        Greeter,
        fallback={"greet": lambda error, **args: Greeting(message="Hello!")},
    )
    # --8<-- [end:fallback]

    @service.get("/hello")
    async def hello(self) -> Greeting:
        return await self.greeter.greet(name="Ada")


async def test_a_fallback_answers_when_the_call_fails(cell_client) -> None:
    failing = FaultInjector(MockTransport(lambda instance, request: {"message": "unused"}))
    failing.abort_with(500, cell="greeter")
    async with Mesh("static://greeter=http://greeter.invalid", transport=failing) as calls:
        client = await cell_client(Polite, mesh=calls)
        assert (await client.get("/hello")).json() == {"message": "Hello!"}
