"""The test kit as a user's project uses it: public API only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestro import ConfigurationError, cell, service
from orchestro.testing import CellClient, make_cell


# --8<-- [start:checkout]
class RealPayments:
    async def charge(self, amount: int) -> str:
        raise RuntimeError("would call the real payment provider")


@cell("checkout")
class Checkout:
    payments: Any = RealPayments()

    def __init__(self) -> None:
        self.currency = "EUR"

    @service.post("/pay/{amount}")
    async def pay(self, amount: int) -> dict[str, str]:
        return {"receipt": await self.payments.charge(amount), "currency": self.currency}


class FakePayments:
    def __init__(self) -> None:
        self.charged: list[int] = []

    async def charge(self, amount: int) -> str:
        self.charged.append(amount)
        return f"r-{amount}"


# --8<-- [end:checkout]


# --8<-- [start:make_cell]
async def test_make_cell_replaces_dependencies() -> None:
    fake = FakePayments()
    checkout = make_cell(Checkout, payments=fake, currency="CHF")
    async with CellClient(checkout) as client:
        response = await client.post("/pay/12")
    assert response.json() == {"receipt": "r-12", "currency": "CHF"}
    assert fake.charged == [12]


# --8<-- [end:make_cell]


def test_make_cell_refuses_unknown_attributes() -> None:
    with pytest.raises(ConfigurationError, match=r"Checkout has no attribute 'payment' to replace"):
        make_cell(Checkout, payment=FakePayments())


def test_make_cell_refuses_plain_classes() -> None:
    with pytest.raises(TypeError, match="not a cell"):
        make_cell(FakePayments)


# --8<-- [start:unit]
async def test_service_methods_can_be_unit_tested_directly() -> None:
    checkout = make_cell(Checkout, payments=FakePayments())
    assert await checkout.pay(5) == {"receipt": "r-5", "currency": "EUR"}


# --8<-- [end:unit]


async def test_cell_client_fixture(cell_client: Callable[..., Awaitable[CellClient]]) -> None:
    client = await cell_client(make_cell(Checkout, payments=FakePayments()))
    assert (await client.post("/pay/1")).status == 200
    assert client.host.state.value == "serving"


def test_make_cell_fixture(make_cell: Callable[..., Any]) -> None:
    assert make_cell(Checkout, currency="USD").currency == "USD"


async def test_client_refuses_requests_before_start() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await CellClient(Checkout).get("/")


async def test_pytester_sees_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from orchestro import cell, service

        @cell("mini")
        class Mini:
            @service.get("/ping")
            async def ping(self) -> str:
                return "pong"

        async def test_ping(cell_client):
            client = await cell_client(Mini)
            assert (await client.get("/ping")).json() == "pong"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)
