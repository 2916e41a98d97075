"""An app that declares no allow-lists: its code says the api calls the ledger."""

from orchestro import cell, mesh, service


@cell("ledger")
class Ledger:
    @service.get("/balance", internal=True)
    async def balance(self) -> dict[str, int]:
        return {"balance": 100}


@cell("api")
class Api:
    ledger = mesh.client(Ledger)

    @service.get("/balance")
    async def balance(self) -> dict[str, int]:
        return await self.ledger.balance()
