"""A cell of another app that calls the ledger by name (not in policy_app.py's code)."""

from typing import Any

from orchestro import cell, mesh, service
from orchestro.errors import RemoteError


@cell("snoop")
class Snoop:
    ledger = mesh.client("ledger")

    @service.get("/peek")
    async def peek(self) -> dict[str, Any]:
        try:
            body = await self.ledger.get("/balance")
        except RemoteError as exc:
            return {"status": exc.status, "problem": exc.problem}
        return {"status": 200, "body": body}
