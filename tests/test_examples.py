"""The examples, tested the way a user's own project tests its cells: public API only."""

# --8<-- [start:quickstart]
from examples.hello import Greeter

from orchestro.testing import CellClient


async def test_greet(cell_client):
    client: CellClient = await cell_client(Greeter)
    response = await client.get("/greet")
    assert response.status == 200
    assert response.json() == {"message": "Hello from Orchestro Cell!"}


async def test_greet_by_name(cell_client):
    client = await cell_client(Greeter)
    response = await client.get("/greet", params={"name": "Ada"})
    assert response.json() == {"message": "Hello Ada from Orchestro Cell!"}


# --8<-- [end:quickstart]
# What the other tests use (after the quickstart's part: the page shows only what it uses).
from examples.hello import AuditEntry  # noqa: E402
from examples.orders import Orders  # noqa: E402

from orchestro.testing import make_cell  # noqa: E402


async def test_audit_is_for_other_cells_only(cell_client):
    greeter = make_cell(Greeter)
    public = await cell_client(greeter)
    entry = {"who": "Ada", "what": "greeted"}
    assert (await public.post("/audit", json=entry)).status == 403
    mesh = await cell_client(make_cell(Greeter, audit_log=greeter.audit_log), caller="frontend")
    assert (await mesh.post("/audit", json=entry)).status == 204
    assert greeter.audit_log == [AuditEntry(who="Ada", what="greeted")]


async def test_order_lifecycle(cell_client):
    client = await cell_client(Orders)
    created = await client.post(
        "/orders", json={"customer": "ada", "items": [{"sku": "tea", "quantity": 2}]}
    )
    assert created.status == 201
    order = created.json()
    assert created.headers["Location"] == f"/orders/{order['id']}"
    assert (await client.get(f"/orders/{order['id']}")).json() == order
    shipped = await client.patch(f"/orders/{order['id']}/status", json={"status": "shipped"})
    assert shipped.json()["status"] == "shipped"
    refused = await client.patch(f"/orders/{order['id']}/status", json={"status": "open"})
    assert refused.status == 409
    assert refused.content_type == "application/problem+json"
    assert (await client.delete(f"/orders/{order['id']}")).status == 204
    assert (await client.get(f"/orders/{order['id']}")).status == 404


async def test_order_search_and_validation(cell_client):
    client = await cell_client(Orders)
    for customer in ("ada", "bob", "ada"):
        await client.post(
            "/orders", json={"customer": customer, "items": [{"sku": "x", "quantity": 1}]}
        )
    found = await client.get("/orders", params={"customer": "ada", "limit": 1})
    assert [o["customer"] for o in found.json()] == ["ada"]
    bad = await client.post("/orders", json={"customer": "", "items": []})
    assert bad.status == 422
    assert [e["loc"] for e in bad.json()["errors"]] == [["body", "customer"], ["body", "items"]]


async def test_idempotency_key_replays_the_first_order(cell_client):
    client = await cell_client(Orders)
    body = {"customer": "ada", "items": [{"sku": "tea", "quantity": 1}]}
    first = await client.post("/orders", json=body, headers={"Idempotency-Key": "k1"})
    again = await client.post("/orders", json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status, again.status) == (201, 200)
    assert again.json() == first.json()
