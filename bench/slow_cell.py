"""The cell bench/autoscale.py scales: each request awaits ~20 ms (an I/O-bound service)."""

from __future__ import annotations

import asyncio

from orchestro import Scaling, cell, service


@cell(
    "slow",
    port=0,
    scaling=Scaling(min=1, max=8, target=8, utilization=1.0),
)
class Slow:
    @service.get("/work")
    async def work(self) -> int:
        await asyncio.sleep(0.02)
        return 1
