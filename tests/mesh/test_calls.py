"""Calls through the mesh against real gateways on loopback (memory registry, in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from orchestro import (
    CallPolicy,
    DeadlineExceeded,
    Header,
    HTTPError,
    Mesh,
    NoInstancesError,
    RemoteError,
    RetryBudgetExhausted,
    cell,
    service,
)
from orchestro.host import CellHost
from orchestro.registry import Registration, RegistryView
from orchestro.registry.memory import MemoryRegistry


class Item(BaseModel):
    sku: str
    quantity: int


@cell("stock")
class Stock:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {"tea": Item(sku="tea", quantity=3)}
        self.calls = 0
        self.fail_with: int | None = None
        self.delay = 0.0
        self.seen_deadline: str | None = None

    @service.get("/items/{sku}", responses={404: "No such item"})
    async def get(self, sku: str, tenant: Annotated[str | None, Header()] = None) -> Item:
        self.calls += 1
        if self.fail_with:
            raise HTTPError(self.fail_with, "injected")
        await asyncio.sleep(self.delay)
        if sku not in self.items:
            raise HTTPError(404, f"no item {sku!r}")
        return self.items[sku]

    @service.put("/items/{sku}")
    async def put(self, sku: str, item: Item) -> Item:
        self.items[sku] = item
        return item

    @service.get("/items")
    async def search(self, min_quantity: int = 0, sku: list[str] | None = None) -> list[Item]:
        return [
            i
            for i in self.items.values()
            if i.quantity >= min_quantity and (sku is None or i.sku in sku)
        ]

    @service.post("/reserve")
    async def reserve(self, item: Item) -> None:
        self.calls += 1
        if self.fail_with:
            raise HTTPError(self.fail_with, "injected")


class Cluster:
    def __init__(self) -> None:
        self.registry = MemoryRegistry(ttl=5)
        self.registration = Registration(self.registry)
        self.hosts: list[CellHost] = []
        self.meshes: list[Mesh] = []

    async def add(self, instance: Stock | None = None) -> CellHost:
        host = CellHost(
            instance or Stock(), host="127.0.0.1", port=0, registration=self.registration
        )
        await host.start()
        self.hosts.append(host)
        return host


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    found = Cluster()
    yield found
    for calls in found.meshes:
        await calls.aclose()
        await calls.view.aclose()
    for host in found.hosts:
        await host.drain()
    await found.registration.aclose()


async def connected(cluster: Cluster, count: int, **options: Any) -> Mesh:
    view = RegistryView(cluster.registry)
    calls = Mesh(view, **options)
    cluster.meshes.append(calls)
    await calls.start()
    async with asyncio.timeout(5):
        await view.wait_for(lambda v: len(v.ready("stock")) == count)
    return calls


async def test_typed_stub_round_trip(cluster: Cluster) -> None:
    await cluster.add()
    calls = await connected(cluster, 1)
    stock = calls.client(Stock)
    assert await stock.get("tea") == Item(sku="tea", quantity=3)
    assert await stock.get(sku="tea", tenant="acme") == Item(sku="tea", quantity=3)
    assert await stock.put("cup", Item(sku="cup", quantity=9)) == Item(sku="cup", quantity=9)
    assert await stock.search(min_quantity=4) == [Item(sku="cup", quantity=9)]
    assert await stock.search(sku=["tea", "cup"]) == [
        Item(sku="tea", quantity=3),
        Item(sku="cup", quantity=9),
    ]
    assert await stock.reserve(Item(sku="tea", quantity=1)) is None


async def test_raw_client(cluster: Cluster) -> None:
    await cluster.add()
    calls = await connected(cluster, 1)
    raw = calls.client("stock")
    assert await raw.get("/items/tea") == {"sku": "tea", "quantity": 3}
    assert await raw.get("/items/tea", response=Item) == Item(sku="tea", quantity=3)
    assert await raw.get("/items", params={"min_quantity": 5}) == []


async def test_remote_4xx_is_a_remote_error_and_not_retried(cluster: Cluster) -> None:
    host = await cluster.add()
    calls = await connected(cluster, 1)
    with pytest.raises(RemoteError) as info:
        await calls.client(Stock).get("nope")
    assert info.value.status == 404
    assert info.value.problem["detail"] == "no item 'nope'"
    assert info.value.cell == "stock"
    assert host.instance.calls == 1


async def test_503_is_retried_on_another_instance(cluster: Cluster) -> None:
    failing, healthy = Stock(), Stock()
    failing.fail_with = 503
    await cluster.add(failing)
    await cluster.add(healthy)
    calls = await connected(cluster, 2)
    for _ in range(20):
        assert (await calls.client(Stock).get("tea")).quantity == 3
    assert healthy.calls == 20


async def test_non_idempotent_calls_are_not_retried(cluster: Cluster) -> None:
    failing = Stock()
    failing.fail_with = 503
    await cluster.add(failing)
    calls = await connected(cluster, 1)
    with pytest.raises(RemoteError):
        await calls.client(Stock).reserve(Item(sku="tea", quantity=1))
    assert failing.calls == 1


async def test_retry_budget_stops_a_retry_storm(cluster: Cluster) -> None:
    failing = Stock()
    failing.fail_with = 503
    await cluster.add(failing)
    policy = CallPolicy(retry_budget_min_per_second=0.2, retry_budget_window=10, backoff_base=0.001)
    calls = await connected(cluster, 1, policy=policy)
    errors: list[type[Exception]] = []
    for _ in range(20):
        try:
            await calls.client(Stock).get("tea")
        except (RemoteError, RetryBudgetExhausted) as exc:
            errors.append(type(exc))
    assert RetryBudgetExhausted in errors
    # 20 requests, retries within 20% of them plus the 2-retry reserve
    assert failing.calls <= 20 * 1.2 + 2


async def test_no_instances(cluster: Cluster) -> None:
    # Waits wait_for_instances (here 50 ms) for one to appear, then fails.
    calls = Mesh(RegistryView(cluster.registry), policy=CallPolicy(wait_for_instances=0.05))
    cluster.meshes.append(calls)
    await calls.start()
    with pytest.raises(NoInstancesError, match="no ready instance of cell 'stock'") as info:
        await calls.client(Stock).get("tea")
    # Where it looked, how long it waited, and what to check.
    assert f"in registry {cluster.registry.url}" in str(info.value)
    assert "(wait_for_instances 0.05 s)" in str(info.value)
    assert "python -m orchestro ls" in str(info.value)


async def test_the_deadline_travels_and_bounds_the_callee(cluster: Cluster) -> None:
    slow = Stock()
    slow.delay = 5
    await cluster.add(slow)
    calls = await connected(cluster, 1, policy=CallPolicy(timeout=0.3, max_attempts=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await calls.client(Stock).get("tea")
    assert loop.time() - started < 3  # the caller did not wait for the 5 s handler
    await asyncio.sleep(0.2)
    assert cluster.hosts[0].gate.in_flight == 0  # nor did the callee work past the deadline


async def test_calls_from_inside_a_cell(cluster: Cluster) -> None:
    from examples.frontend import Frontend
    from examples.hello import Greeter

    registration = cluster.registration
    calls = Mesh(RegistryView(cluster.registry))
    cluster.meshes.append(calls)
    await calls.start()
    greeter = CellHost(Greeter, host="127.0.0.1", port=0, registration=registration)
    frontend = CellHost(Frontend, host="127.0.0.1", port=0, registration=registration, mesh=calls)
    await greeter.start()
    await frontend.start()
    cluster.hosts += [greeter, frontend]
    async with asyncio.timeout(5):
        await calls.view.wait_for(lambda v: bool(v.ready("greeter")))
    greeting = await frontend.instance.hello("Ada")
    assert greeting.message == "Hello Ada from Orchestro Cell!"


async def test_calls_to_a_cell_in_this_process_skip_the_network(cluster: Cluster) -> None:
    view = RegistryView(cluster.registry)
    calls = Mesh(view)
    cluster.meshes.append(calls)
    await calls.start()
    stock = Stock()
    host = CellHost(stock, host="127.0.0.1", port=0, registration=cluster.registration, mesh=calls)
    await host.start()
    cluster.hosts.append(host)
    client = calls.client(Stock)
    assert await client.get("tea") == Item(sku="tea", quantity=3)
    assert calls.target_state("stock") is None  # never went through the HTTP pipeline
    with pytest.raises(RemoteError) as info:  # same errors as over HTTP
        await client.get("nope")
    assert (info.value.status, info.value.problem["detail"]) == (404, "no item 'nope'")
    stock.delay = 5
    with pytest.raises(DeadlineExceeded):
        await calls.client(Stock, policy=CallPolicy(timeout=0.05)).get("tea")
    assert host.gate.in_flight == 0
    stock.delay = 0
    stock.fail_with = None
    with pytest.raises(Exception, match="validation error"):
        await client.put("cup", {"sku": "cup"})  # the callee's types, checked locally

    await host.drain()  # draining: the local path is closed, calls go over the network
    with pytest.raises(NoInstancesError):
        await calls.client(Stock, policy=CallPolicy(wait_for_instances=0)).get("tea")
