"""A small shop: storefront -> orders -> inventory and payments, calling each other by name.

All four cells in one process (calls between them take the in-process path):

    python -m orchestro run examples/shop.py

Or split across terminals (they find each other through the local registry):

    python -m orchestro run examples/shop.py --cell inventory --cell payments
    python -m orchestro run examples/shop.py --cell orders
    python -m orchestro run examples/shop.py --cell storefront

Then:

    curl -X POST localhost:8090/checkout -H 'content-type: application/json' \
         -d '{"sku": "tea", "quantity": 2}'
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, Field

from orchestro import CallError, HTTPError, RemoteError, Response, cell, mesh, service

PRICES = {"tea": 450, "cup": 1200, "pot": 3900}


class Stock(BaseModel):
    sku: str
    available: int
    price_cents: int


class Reservation(BaseModel):
    sku: str = Field(pattern=r"^[a-z]+$", max_length=20)
    quantity: int = Field(ge=1, le=100)


class Reserved(Reservation):
    id: int


class Charge(BaseModel):
    order_id: int = Field(ge=1)
    amount_cents: int = Field(ge=1)


class Receipt(BaseModel):
    order_id: int
    amount_cents: int
    reference: str


class Order(BaseModel):
    id: int
    sku: str
    quantity: int
    amount_cents: int
    reference: str


@cell("inventory", port=8093, version="1.0.0")
class Inventory:
    """Stock levels and reservations."""

    def __init__(self) -> None:
        self.stock = {"tea": 40, "cup": 12, "pot": 2}
        self.reservations: dict[int, Reservation] = {}
        self.ids = itertools.count(1)

    @service.get("/stock/{sku}", responses={404: "Unknown product"})
    async def level(self, sku: str) -> Stock:
        """The stock of one product."""
        if sku not in self.stock:
            raise HTTPError(404, f"unknown product {sku!r}")
        return Stock(sku=sku, available=self.stock[sku], price_cents=PRICES[sku])

    @service.post(
        "/reservations",
        status=201,
        responses={404: "Unknown product", 409: "Not enough stock"},
    )
    async def reserve(self, reservation: Reservation) -> Reserved:
        """Hold stock for an order."""
        available = self.stock.get(reservation.sku)
        if available is None:
            raise HTTPError(404, f"unknown product {reservation.sku!r}")
        if available < reservation.quantity:
            raise HTTPError(409, f"only {available} {reservation.sku} left")
        self.stock[reservation.sku] = available - reservation.quantity
        held = Reserved(id=next(self.ids), **reservation.model_dump())
        self.reservations[held.id] = reservation
        return held

    @service.delete("/reservations/{reservation_id}")
    async def release(self, reservation_id: int) -> None:
        """Give held stock back (idempotent)."""
        held = self.reservations.pop(reservation_id, None)
        if held is not None:
            self.stock[held.sku] += held.quantity


@cell("payments", port=8092, version="1.0.0")
class Payments:
    """Takes the money (up to a limit per charge, to show failures)."""

    limit_cents = 10_000

    @service.post("/charges", status=201, responses={409: "Declined: over the limit"})
    async def charge(self, charge: Charge) -> Receipt:
        """Charge an order."""
        if charge.amount_cents > self.limit_cents:
            raise HTTPError(409, f"declined: {charge.amount_cents} cents is over the limit")
        return Receipt(
            order_id=charge.order_id,
            amount_cents=charge.amount_cents,
            reference=f"pay-{charge.order_id:06d}",
        )


@cell("orders", port=8091, version="1.0.0")
class Orders:
    """Places orders: reserves stock, charges, and undoes the reservation if payment fails."""

    inventory = mesh.client(Inventory)
    payments = mesh.client(Payments)

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.ids = itertools.count(1)

    @service.post(
        "/orders",
        status=201,
        responses={404: "Unknown product", 409: "Not enough stock, or payment declined"},
    )
    async def place(self, item: Reservation) -> Order:
        """Place an order."""
        try:
            stock = await self.inventory.level(item.sku)
            held = await self.inventory.reserve(item)
        except RemoteError as exc:
            raise HTTPError(exc.status, exc.problem.get("detail")) from exc
        order_id = next(self.ids)
        amount = stock.price_cents * item.quantity
        try:
            receipt = await self.payments.charge(Charge(order_id=order_id, amount_cents=amount))
        except CallError as exc:
            await self.inventory.release(held.id)  # compensate
            status = 409 if isinstance(exc, RemoteError) else 503
            detail = exc.problem.get("detail") if isinstance(exc, RemoteError) else str(exc)
            raise HTTPError(status, f"payment failed: {detail}") from exc
        order = Order(
            id=order_id,
            sku=item.sku,
            quantity=item.quantity,
            amount_cents=amount,
            reference=receipt.reference,
        )
        self.orders[order.id] = order
        return order

    @service.get("/orders/{order_id}", responses={404: "No such order"})
    async def get(self, order_id: int) -> Order:
        """One order."""
        if order_id not in self.orders:
            raise HTTPError(404, f"no order {order_id}")
        return self.orders[order_id]


@cell("storefront", port=8090, version="1.0.0")
class Storefront:
    """The shop's public API."""

    orders = mesh.client(Orders)
    inventory = mesh.client(Inventory)

    @service.get("/products/{sku}", responses={404: "Unknown product", 503: "Unavailable"})
    async def product(self, sku: str) -> Stock:
        """A product and its stock."""
        return await _forward(self.inventory.level(sku))

    @service.post(
        "/checkout",
        status=201,
        responses={
            404: "Unknown product",
            409: "Not enough stock, or payment declined",
            503: "A cell is unavailable",
        },
    )
    async def checkout(self, item: Reservation) -> Response[Order]:
        """Buy something."""
        order = await _forward(self.orders.place(item))
        return Response(order, status=201, headers={"Location": f"/orders/{order.id}"})


async def _forward(call):  # type: ignore[no-untyped-def]
    """Await a mesh call; answer its remote error as our own, anything else as 503."""
    try:
        return await call
    except RemoteError as exc:
        raise HTTPError(exc.status, exc.problem.get("detail")) from exc
    except CallError as exc:
        raise HTTPError(503, str(exc)) from exc
