"""Cells the examples do not have: auto-scaled ones, an internal-only one, a free port."""

from __future__ import annotations

from orchestro import Scaling, cell, mesh, service


@cell("ledger", port=9001, version="2.1.0")
class Ledger:
    """Internal services only: only its callers (and monitoring) may reach it."""

    @service.get("/balance", internal=True)
    async def balance(self) -> int:
        return 0


@cell(
    "api",
    port=9000,
    version="2.1.0",
    scaling=Scaling(min=2, max=12, target=50, scale_down_delay=120, max_scale_down_rate=4),
)
class Api:
    ledger = mesh.client(Ledger)
    search = mesh.client("search")  # a raw client of a cell deployed elsewhere
    rates = mesh.client("https://rates.example.com")

    @service.get("/total")
    async def total(self) -> int:
        return 0


@cell("worker", version="2.1.0", scaling=Scaling(min=0, max=5, metric="cpu", target=0.5))
class Worker:
    """Port 0 (a free one locally); scales to zero under KEDA."""

    @service.post("/jobs")
    async def submit(self) -> None:
        return None
