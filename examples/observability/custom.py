"""A cell with telemetry of its own: a counter, a histogram, a span and log fields.

    python -m orchestro run examples/observability/custom.py
    curl -X POST localhost:8085/orders -H 'content-type: application/json' \
         -d '{"sku": "tea", "quantity": 2, "channel": "web"}'
    curl -s localhost:8085/metrics | grep shop_orders

Its metrics appear on the cell's /metrics beside orchestro's own, its span joins the
request's trace, and its log lines carry the request's trace id and the order id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from pydantic import BaseModel, Field

from orchestro import cell, observability, service

log = logging.getLogger("shop.orders")

# Made at import time, before the process's telemetry is set up: the OpenTelemetry API
# hands out proxies that bind to orchestro's providers at start-up.
meter = observability.meter("shop.orders")
tracer = observability.tracer("shop.orders")
placed = meter.create_counter(
    "shop.orders.placed", unit="{order}", description="Orders placed, by sales channel."
)
basket = meter.create_histogram(
    "shop.orders.quantity",
    unit="{item}",
    description="Items per order.",
    explicit_bucket_boundaries_advisory=[1, 2, 5, 10, 20, 50],
)


class Order(BaseModel):
    sku: str = Field(pattern=r"^[a-z]+$", max_length=20)
    quantity: int = Field(ge=1, le=100)
    channel: str = Field(default="web", pattern=r"^(web|store|phone)$")


class Placed(BaseModel):
    id: int
    sku: str
    quantity: int


@cell("orders-observed", port=8085, version="1.0.0")
class Orders:
    """Takes orders, and says so in its own metrics, spans and logs."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)

    @service.post("/orders", status=201)
    async def place(self, order: Order) -> Placed:
        """Place an order."""
        order_id = next(self.ids)
        observability.log_fields(order_id=order_id)  # on every later line of this request
        with tracer.start_as_current_span("check stock") as span:
            span.set_attribute("shop.sku", order.sku)
            await asyncio.sleep(0.001)  # stands for a stock lookup
        placed.add(1, {"shop.channel": order.channel})
        basket.record(order.quantity, {"shop.channel": order.channel})
        log.info("order placed", extra={"sku": order.sku, "quantity": order.quantity})
        return Placed(id=order_id, sku=order.sku, quantity=order.quantity)
