"""Path, query, header and body binding, validated, with every failing field listed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestro.config import GatewaySettings
from orchestro.testing import CellClient

from .cells import Binder

PROBLEM = "application/problem+json"
Factory = Callable[..., Awaitable[CellClient]]


@pytest.fixture
async def client(cell_client: Factory) -> CellClient:
    return await cell_client(Binder)


async def test_path_parameters_are_converted(client: CellClient) -> None:
    response = await client.get("/items/42/2024-02-29")
    assert response.status == 200
    assert response.json() == {"values": {"item_id": 42, "when": "2024-02-29"}}


async def test_bad_path_parameter_is_422_naming_it(client: CellClient) -> None:
    response = await client.get("/items/abc/2024-13-01")
    assert response.status == 422
    assert response.content_type == PROBLEM
    body = response.json()
    assert body["status"] == 422
    assert [e["loc"] for e in body["errors"]] == [["path", "item_id"], ["path", "when"]]
    assert body["detail"] == "2 invalid inputs: see errors"


async def test_query_parameters_with_defaults(client: CellClient) -> None:
    response = await client.get("/query", params={"n": "3"})
    assert response.json()["values"] == {
        "n": 3,
        "ratio": 0.5,
        "flag": False,
        "color": None,
        "tags": None,
        "ids": [],
        "page": 1,
    }


async def test_query_parameters_typed_and_repeated(client: CellClient) -> None:
    response = await client.get(
        "/query",
        params={
            "n": "7",
            "ratio": "2.5",
            "flag": "true",
            "color": "red",
            "tags": ["a", "b"],
            "id": ["1", "2"],
            "page": "3",
        },
    )
    assert response.status == 200
    assert response.json()["values"] == {
        "n": 7,
        "ratio": 2.5,
        "flag": True,
        "color": "red",
        "tags": ["a", "b"],
        "ids": [1, 2],
        "page": 3,
    }


async def test_integral_float_is_an_integer(client: CellClient) -> None:
    # JSON Schema calls 52.0 an integer; the validator agrees, so OpenAPI tells the truth.
    assert (await client.get("/query", params={"n": "52.0"})).json()["values"]["n"] == 52


async def test_every_failing_query_field_is_listed(client: CellClient) -> None:
    response = await client.get(
        "/query", params={"ratio": "x", "color": "green", "id": ["1", "z"], "page": "11"}
    )
    assert response.status == 422
    errors = response.json()["errors"]
    assert {tuple(e["loc"][:2]) for e in errors} == {
        ("query", "n"),
        ("query", "ratio"),
        ("query", "color"),
        ("query", "id"),
        ("query", "page"),
    }
    missing = next(e for e in errors if e["loc"] == ["query", "n"])
    assert missing == {"loc": ["query", "n"], "msg": "Field required", "type": "missing"}
    assert ["query", "id", 1] in [e["loc"] for e in errors]


async def test_headers_are_bound_case_insensitively(client: CellClient) -> None:
    trace = "6f1c2e0e-9f4d-4d3b-8a52-0c6e7a2b9f10"
    response = await client.get("/headers", headers={"X-TENANT": "acme", "x-trace": trace})
    assert response.json() == {"values": {"tenant": "acme", "trace": trace}}


async def test_missing_and_bad_headers_are_422(client: CellClient) -> None:
    response = await client.get("/headers", headers={"X-Trace": "not-a-uuid"})
    assert response.status == 422
    assert [e["loc"] for e in response.json()["errors"]] == [
        ["header", "x-tenant"],
        ["header", "X-Trace"],
    ]


async def test_json_body_is_validated_into_the_model(client: CellClient) -> None:
    basket = {"owner": "ada", "lines": [{"sku": "tea", "quantity": 2}]}
    response = await client.post("/baskets", json=basket)
    assert response.status == 200
    assert response.json() == basket


async def test_body_content_type_with_parameters_and_plus_json(client: CellClient) -> None:
    for ctype in ("application/json; charset=utf-8", "application/vnd.shop+json"):
        response = await client.post(
            "/baskets", content=b'{"owner": "a", "lines": []}', headers={"Content-Type": ctype}
        )
        assert response.status == 200, ctype


async def test_body_errors_list_each_nested_field(client: CellClient) -> None:
    response = await client.post(
        "/baskets", json={"lines": [{"sku": "", "quantity": 0}, {"sku": "ok", "quantity": "x"}]}
    )
    assert response.status == 422
    assert response.content_type == PROBLEM
    assert [e["loc"] for e in response.json()["errors"]] == [
        ["body", "owner"],
        ["body", "lines", 0, "sku"],
        ["body", "lines", 0, "quantity"],
        ["body", "lines", 1, "quantity"],
    ]


async def test_malformed_json_is_400(client: CellClient) -> None:
    response = await client.post(
        "/baskets", content=b'{"owner": ', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert response.content_type == PROBLEM
    assert response.json()["detail"].startswith("the body is not valid JSON: ")


async def test_invalid_utf8_is_400(client: CellClient) -> None:
    response = await client.post(
        "/baskets", content=b'{"owner": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({"Content-Type": "text/plain"}, "text/plain"),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            "application/x-www-form-urlencoded",
        ),
        ({}, "application/octet-stream"),  # what aiohttp sends for bytes
    ],
)
async def test_non_json_body_is_415(client: CellClient, headers: dict[str, str], sent: str) -> None:
    response = await client.post("/baskets", content=b"owner=ada", headers=headers)
    assert response.status == 415
    assert response.content_type == PROBLEM
    assert response.json()["detail"] == (
        f"the body must be JSON (Content-Type: application/json), not {sent}"
    )
    assert response.headers["Accept-Post"] == "application/json"


async def test_missing_required_body_is_422(client: CellClient) -> None:
    response = await client.post("/baskets")
    assert response.status == 422
    assert response.json()["errors"] == [
        {"loc": ["body"], "msg": "Field required", "type": "missing"}
    ]


async def test_optional_body_may_be_absent(client: CellClient) -> None:
    assert (await client.patch("/optional")).json() == {"values": {"basket": None}}
    response = await client.patch("/optional", json={"owner": "b", "lines": []})
    assert response.json() == {"values": {"basket": {"owner": "b", "lines": []}}}


async def test_non_model_body_with_marker(client: CellClient) -> None:
    assert (await client.put("/numbers", json=[1, 2, 3])).json() == 6
    response = await client.put("/numbers", json={"a": 1})
    assert response.status == 422
    assert response.json()["errors"][0]["loc"] == ["body"]


async def test_optional_query_parameters_without_a_query_string(client: CellClient) -> None:
    # No query string at all: every parameter takes its default (the binder's quick path),
    # the request parameter is still bound; the same answers with a query, or an empty one.
    defaults = {"limit": 10, "tag": None, "path": "/defaults"}
    assert (await client.get("/defaults")).json()["values"] == defaults
    assert (await client.get("/defaults?")).json()["values"] == defaults
    given = await client.get("/defaults", params={"limit": "3", "tag": "x"})
    assert given.json()["values"] == {"limit": 3, "tag": "x", "path": "/defaults"}
    bad = await client.get("/defaults", params={"limit": "many"})
    assert bad.status == 422
    assert bad.json()["errors"][0]["loc"] == ["query", "limit"]


async def test_raw_request_parameter(client: CellClient) -> None:
    assert (await client.get("/raw")).json() == {"values": {"path": "/raw", "method": "GET"}}


@pytest.mark.parametrize("size", [2048, 4096])
async def test_body_over_the_limit_is_413(cell_client: Factory, size: int) -> None:
    client = await cell_client(Binder, settings=GatewaySettings(max_body_size=1024))
    payload: Any = {"owner": "x" * size, "lines": []}
    response = await client.post("/baskets", json=payload)
    assert response.status == 413
    assert response.content_type == PROBLEM
    assert response.json()["detail"] == "the body is larger than the limit of 1024 bytes"


async def test_chunked_body_over_the_limit_is_413(cell_client: Factory) -> None:
    client = await cell_client(Binder, settings=GatewaySettings(max_body_size="1KiB"))

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 512

    assert client._session is not None
    async with client._session.post(
        "/baskets", data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await response.json(content_type=None))["status"] == 413


async def test_encoded_slash_in_a_path_parameter(cell_client: Factory) -> None:
    client = await cell_client(Binder)
    response = await client.get("/items/1/2024-01-01")
    assert response.status == 200
    assert (await client.get("/items/1%2F2/2024-01-01")).json()["errors"][0]["loc"] == [
        "path",
        "item_id",
    ]


async def test_expect_100_continue(client: CellClient) -> None:
    assert client._session is not None
    basket = b'{"owner": "ada", "lines": []}'
    async with client._session.post(
        "/baskets", data=basket, headers={"Content-Type": "application/json"}, expect100=True
    ) as response:
        assert response.status == 200
        assert await response.json() == {"owner": "ada", "lines": []}


async def test_detail_counts_the_errors_it_lists(client: CellClient) -> None:
    lines = [{"sku": "", "quantity": 0}, {"sku": "", "quantity": 0}]
    response = await client.post("/baskets", json={"owner": "ada", "lines": lines})
    body = response.json()
    assert len(body["errors"]) == 4  # all four in the one body field "lines"
    assert body["detail"] == "4 invalid inputs: see errors"
