"""CORS: declarations checked at import, preflights answered by the gateway, the headers on
every answer (errors included) and Vary: Origin."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from orchestro import CORS, CellDefinitionError, cell, service
from orchestro.testing import CellClient

APP = "https://app.example"


class Item(BaseModel):
    name: str


@cell("store", cors=CORS(origins=[APP], credentials=True, max_age=120), rate_limit="2/min")
class Store:
    @service.get("/items/{name}")
    async def get(self, name: str) -> Item:
        return Item(name=name)

    @service.put("/items/{name}")
    async def put(self, name: str, item: Item) -> Item:
        return item

    @service.get("/audit", internal=True)
    async def audit(self) -> Item:
        return Item(name="secret")


@cell("open-data", cors=CORS(origins=["*"]))
class OpenData:
    @service.get("/data")
    async def data(self) -> Item:
        return Item(name="public")


def preflight(method: str, origin: str = APP, headers: str | None = None) -> dict[str, str]:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return asked


async def test_a_preflight_from_an_allowed_origin_is_answered_by_the_gateway() -> None:
    async with CellClient(Store) as client:
        answer = await client.request(
            "OPTIONS", "/items/pen", headers=preflight("PUT", headers="content-type, authorization")
        )
        assert answer.status == 204
        h = answer.headers
        assert h["Access-Control-Allow-Origin"] == APP
        assert h["Access-Control-Allow-Credentials"] == "true"
        assert set(h["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "PUT"}
        assert h["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        assert h["Access-Control-Max-Age"] == "120"
        assert "Origin" in h["Vary"]
        # Preflights spend no rate limit (the cell allows 2 a minute).
        for _ in range(5):
            again = await client.request("OPTIONS", "/items/pen", headers=preflight("GET"))
            assert again.status == 204


@pytest.mark.parametrize(
    ("asked", "why"),
    [
        (preflight("GET", origin="https://evil.example"), "origin 'https://evil.example' may not"),
        (preflight("DELETE"), "DELETE is not allowed on /items/{name} (allowed: GET, HEAD, PUT)"),
        (preflight("PUT", headers="x-debug"), "request header(s) x-debug not allowed"),
    ],
)
async def test_a_refused_preflight_is_403_saying_which_part(
    asked: dict[str, str], why: str
) -> None:
    async with CellClient(Store) as client:
        answer = await client.request("OPTIONS", "/items/pen", headers=asked)
        assert answer.status == 403
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert why in answer.json()["detail"]


async def test_a_plain_options_gets_allow_and_internal_paths_get_no_preflight() -> None:
    async with CellClient(Store) as client:
        answer = await client.request("OPTIONS", "/items/pen")
        assert answer.status == 204
        assert answer.headers["Allow"] == "GET, HEAD, OPTIONS, PUT"
        internal = await client.request("OPTIONS", "/audit", headers=preflight("GET"))
        assert internal.status == 405


async def test_answers_carry_the_cors_headers_errors_included() -> None:
    async with CellClient(Store) as client:
        ok = await client.get("/items/pen", headers={"Origin": APP})
        assert ok.status == 200
        assert ok.headers["Access-Control-Allow-Origin"] == APP
        assert ok.headers["Access-Control-Allow-Credentials"] == "true"
        exposed = ok.headers["Access-Control-Expose-Headers"]
        assert "RateLimit" in exposed
        assert "Retry-After" in exposed
        assert ok.headers["Vary"] == "Origin"
        # A 429 carries them too, so the page can read Retry-After.
        await client.get("/items/pen", headers={"Origin": APP})
        limited = await client.get("/items/pen", headers={"Origin": APP})
        assert limited.status == 429
        assert limited.headers["Access-Control-Allow-Origin"] == APP
        # Another origin gets no grant, but the answer still varies by origin.
        other = await client.put(
            "/items/pen", json={"name": "pen"}, headers={"Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        assert other.headers["Vary"] == "Origin"
        # No Origin (not a browser's cross-origin call): no grant, Vary all the same.
        plain = await client.put("/items/pen", json={"name": "pen"})
        assert "Access-Control-Allow-Origin" not in plain.headers
        assert plain.headers["Vary"] == "Origin"


async def test_any_origin_without_credentials_is_a_star() -> None:
    async with CellClient(OpenData) as client:
        answer = await client.get("/data", headers={"Origin": "https://anyone.example"})
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers
        pre = await client.request(
            "OPTIONS", "/data", headers=preflight("GET", origin="https://x.example")
        )
        assert pre.status == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("cors", "why"),
    [
        (CORS(origins=["*"], credentials=True), "forbids '\\*' with credentials"),
        (CORS(origins=["https://app.example/"]), "is not scheme://host\\[:port\\]"),
        (CORS(origins=["app.example"]), "is not scheme://host"),
        (CORS(origins=[]), "allows no page"),
        (CORS(origins=[APP], headers=["bad header"]), "bad method or header"),
        (CORS(origins=[APP], max_age=-1), "max_age=-1"),
        ({"origins": [APP]}, "is not a CORS"),
    ],
)
def test_a_bad_cors_declaration_is_refused_at_decoration(cors: object, why: str) -> None:
    with pytest.raises(CellDefinitionError, match=rf"@cell\('web'\).*{why}"):
        cell("web", cors=cors)  # type: ignore[arg-type]
