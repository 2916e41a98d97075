"""A vault only the teller may read, and an audit only the auditor may run.

Two terminals, no flags: mutual TLS between them comes with the first run.

python -m orchestro run examples/vault.py --cell vault
python -m orchestro run examples/vault.py --cell teller --cell auditor --cell shop
curl http://127.0.0.1:PORT/withdraw     # the teller's public service calls the vault's
curl http://127.0.0.1:PORT/peek         # the shop is not on the vault's list: 403, the rule
python -m orchestro policy examples/vault.py    # who calls whom, and the lists it implies
"""

from pydantic import BaseModel

from orchestro import Caller, HTTPError, cell, mesh, service
from orchestro.errors import RemoteError


class Secret(BaseModel):
    value: str


class AuditReport(BaseModel):
    reads: int
    auditor: str


class Withdrawal(BaseModel):
    approved: bool
    secret_length: int


class Refusal(BaseModel):
    status: int
    detail: str
    rule: str


@cell("vault", allow=["teller"])
class Vault:
    """Keeps a secret: its internal services answer the teller only."""

    def __init__(self) -> None:
        self.reads = 0

    @service.get("/secret", internal=True)
    async def secret(self, caller: Caller) -> Secret:
        """The secret (the teller only: the cell's allow-list)."""
        self.reads += 1
        return Secret(value=f"opened by {caller.cell}")

    @service.post("/audit", internal=True, allow=["auditor"])
    async def audit(self, caller: Caller) -> AuditReport:
        """How often the secret was read (the auditor only: this service's own list)."""
        return AuditReport(reads=self.reads, auditor=str(caller.cell))

    @service.get("/status")
    async def status(self) -> dict[str, str]:
        """Public: anyone may ask whether the vault is open."""
        return {"vault": "open"}


@cell("teller")
class Teller:
    vault = mesh.client(Vault)

    @service.get("/withdraw")
    async def withdraw(self) -> Withdrawal:
        secret = await self.vault.secret()
        return Withdrawal(approved=True, secret_length=len(secret.value))


@cell("auditor")
class Auditor:
    vault = mesh.client(Vault)

    @service.get("/audit")
    async def audit(self) -> AuditReport:
        return await self.vault.audit()


@cell("shop")
class Shop:
    """Declares a client of the vault, but is on none of its lists."""

    vault = mesh.client(Vault)

    @service.get("/peek")
    async def peek(self) -> Refusal:
        try:
            await self.vault.secret()
        except RemoteError as exc:
            problem = exc.problem or {}
            return Refusal(
                status=exc.status or 0,
                detail=str(problem.get("detail", "")),
                rule=str(problem.get("rule", "")),
            )
        raise HTTPError(500, "the vault answered the shop: its allow-list did not hold")
