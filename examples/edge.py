"""A cell at the edge: rate limits per caller, bearer tokens, CORS for a browser app.

ORCHESTRO_API_KEYS="ci=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')" \
    python -m orchestro run examples/edge.py
"""

from pydantic import BaseModel

from orchestro import CORS, Caller, cell, service


class Quote(BaseModel):
    symbol: str
    price: float


class Me(BaseModel):
    subject: str | None
    scheme: str | None


@cell(
    "quotes",
    port=8085,
    rate_limit="600/min",  # per caller, shared by the services below that set none
    auth="api-key",  # every service needs a token unless it says otherwise
    cors=CORS(origins=["https://app.example"], credentials=True),
)
class Quotes:
    @service.get("/quotes/{symbol}", rate_limit="20/s burst 40")
    async def quote(self, symbol: str) -> Quote:
        return Quote(symbol=symbol.upper(), price=42.0)

    @service.get("/me")
    async def me(self, caller: Caller) -> Me:
        return Me(subject=caller.subject, scheme=caller.scheme)

    @service.get("/status", auth="none", rate_limit="unlimited")
    async def status(self) -> Me:
        return Me(subject=None, scheme=None)
