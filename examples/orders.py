"""Orders: path, query, header and body binding, explicit responses and problem errors.

    python -m orchestro run examples/orders.py
    curl -X POST localhost:8082/orders -H 'content-type: application/json' \
         -d '{"customer": "ada", "items": [{"sku": "tea", "quantity": 2}]}'
    curl localhost:8082/orders/1
    curl 'localhost:8082/orders?status=open&limit=10'
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field

from orchestro import Header, HTTPError, Response, cell, service


class Status(enum.StrEnum):
    OPEN = "open"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class Item(BaseModel):
    sku: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9-]+$")
    quantity: int = Field(ge=1, le=1000)


class NewOrder(BaseModel):
    customer: str = Field(min_length=1, max_length=100)
    items: list[Item] = Field(min_length=1, max_length=100)


class Order(NewOrder):
    id: int
    status: Status
    created_at: datetime


class StatusChange(BaseModel):
    status: Status


@cell("orders", port=8082, version="1.0.0")
class Orders:
    """Takes and tracks orders."""

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.by_key: dict[str, int] = {}
        self.next_id = 1

    @service.post(
        "/orders", status=201, responses={200: "Replayed: the order made with this Idempotency-Key"}
    )
    async def create(
        self,
        order: NewOrder,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response[Order]:
        """Place an order.

        Send an `Idempotency-Key` header to make retries safe: the same key answers the
        order it created first, with 200.
        """
        replayed = self.orders.get(self.by_key.get(idempotency_key or "", 0))
        if replayed is not None:
            return Response(replayed, status=200)
        saved = Order(
            id=self.next_id, status=Status.OPEN, created_at=datetime.now(UTC), **order.model_dump()
        )
        self.orders[saved.id] = saved
        self.next_id += 1
        if idempotency_key is not None:
            self.by_key[idempotency_key] = saved.id
        return Response(saved, status=201, headers={"Location": f"/orders/{saved.id}"})

    @service.get("/orders/{order_id}", responses={404: "No such order"})
    async def get(self, order_id: int) -> Order:
        """One order."""
        return self._find(order_id)

    @service.get("/orders")
    async def search(
        self,
        status: Status | None = None,
        customer: str | None = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> list[Order]:
        """Orders, newest first, optionally filtered."""
        found = [
            o
            for o in reversed(self.orders.values())
            if (status is None or o.status == status)
            and (customer is None or o.customer == customer)
        ]
        return found[:limit]

    @service.patch(
        "/orders/{order_id}/status",
        responses={404: "No such order", 409: "The order cannot change to that status"},
    )
    async def change_status(self, order_id: int, change: StatusChange) -> Order:
        """Ship or cancel an open order."""
        order = self._find(order_id)
        if order.status is not Status.OPEN and change.status is not order.status:
            raise HTTPError(409, f"order {order_id} is {order.status}; it can no longer change")
        updated = order.model_copy(update={"status": change.status})
        self.orders[order_id] = updated
        return updated

    @service.delete("/orders/{order_id}", responses={404: "No such order"})
    async def delete(self, order_id: int) -> None:
        """Forget an order."""
        self._find(order_id)
        del self.orders[order_id]

    def _find(self, order_id: int) -> Order:
        try:
            return self.orders[order_id]
        except KeyError:
            raise HTTPError(404, f"order {order_id} does not exist") from None
