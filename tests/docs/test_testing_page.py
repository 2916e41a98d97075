"""The code of docs/how-to/testing.md, run as a user's project runs it (the page shows these
sections: see tests/docs/blocks.py)."""

# --8<-- [start:client]
from examples.hello import Greeter

from orchestro.testing import CellClient


async def test_greet():
    async with CellClient(Greeter) as client:
        response = await client.get("/greet", params={"name": "Ada"})
    assert response.status == 200
    assert response.json() == {"message": "Hello Ada from Orchestro Cell!"}


# --8<-- [end:client]


# --8<-- [start:internal]
async def test_audit_answers_other_cells(cell_client):
    client = await cell_client(Greeter, caller="frontend")
    assert (await client.post("/audit", json={"who": "Ada", "what": "hi"})).status == 204


# --8<-- [end:internal]


# --8<-- [start:clock]
from orchestro.mesh.budget import RetryBudget  # noqa: E402
from orchestro.testing import FakeClock  # noqa: E402


def test_the_retry_budget_refills_when_its_window_has_passed():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=10, clock=clock)
    while budget.try_spend():
        pass  # spend the reserve: 10 retries
    assert not budget.try_spend()
    clock.advance(11)  # the window has passed
    assert budget.try_spend()


# --8<-- [end:clock]
