"""The greeter: the smallest useful cell.

python -m orchestro run examples/hello.py
curl http://127.0.0.1:8081/greet              # {"message":"Hello from Orchestro Cell!"}
curl 'http://127.0.0.1:8081/greet?name=Ada'   # {"message":"Hello Ada from Orchestro Cell!"}
"""

from pydantic import BaseModel, Field

from orchestro import cell, service


class Greeting(BaseModel):
    message: str


class AuditEntry(BaseModel):
    who: str = Field(min_length=1, max_length=100)
    what: str = Field(max_length=1000)


@cell("greeter", port=8081, version="1.0.0")
class Greeter:
    """Says hello."""

    def __init__(self) -> None:
        self.audit_log: list[AuditEntry] = []

    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        """Greet someone, or everyone."""
        who = f" {name}" if name else ""
        return Greeting(message=f"Hello{who} from Orchestro Cell!")

    @service.post("/audit", internal=True)
    async def audit(self, entry: AuditEntry) -> None:
        """Record who was greeted (other cells only)."""
        self.audit_log.append(entry)
