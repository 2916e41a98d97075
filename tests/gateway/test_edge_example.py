"""examples/edge.py, as docs/concepts/edge.md shows it: limits, tokens and CORS together."""

from __future__ import annotations

import asyncio

from examples.edge import Quotes

from orchestro.config import AuthSettings
from orchestro.testing import CellClient

KEY = "ci-" + "x" * 40


async def test_the_edge_example_limits_asks_for_a_token_and_answers_browsers() -> None:
    async with CellClient(Quotes, auth=AuthSettings(api_keys=f"ci={KEY}")) as client:
        token = {"Authorization": f"Bearer {KEY}"}
        assert (await client.get("/quotes/acme")).status == 401
        me = await client.get("/me", headers=token)
        assert me.json() == {"subject": "ci", "scheme": "api-key"}
        assert me.headers["RateLimit-Policy"] == '"quotes";q=600;w=60'
        burst = await asyncio.gather(
            *(client.get("/quotes/acme", headers=token) for _ in range(200))
        )
        statuses = [answer.status for answer in burst]
        assert statuses.count(200) >= 40  # the burst, and what 20/s added meanwhile
        assert 429 in statuses
        assert (await client.get("/status")).status == 200
        browser = await client.get("/me", headers={**token, "Origin": "https://app.example"})
        assert browser.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_the_document_tells_of_tokens_and_limits() -> None:
    async with CellClient(Quotes, auth=AuthSettings(api_keys=f"ci={KEY}")) as client:
        document = (await client.get("/openapi.json")).json()
    quote = document["paths"]["/quotes/{symbol}"]["get"]
    assert quote["security"] == [{"bearer": []}]
    assert {"401", "429"} <= set(quote["responses"])
    status = document["paths"]["/status"]["get"]
    assert "security" not in status
    assert "401" not in status["responses"]
    assert "429" not in status["responses"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
