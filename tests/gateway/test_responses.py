"""Return values become answers: models and JSON (200), None (204), Response objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from orchestro import Response
from orchestro.testing import CellClient

from .cells import Answers

Factory = Callable[..., Awaitable[CellClient]]


@pytest.fixture
async def client(cell_client: Factory) -> CellClient:
    return await cell_client(Answers)


async def test_model_is_json_200(client: CellClient) -> None:
    response = await client.get("/model")
    assert (response.status, response.content_type) == (200, "application/json")
    assert response.json() == {"sku": "tea", "quantity": 2}


async def test_models_keep_their_serialisation_config(client: CellClient) -> None:
    # Rendered by the model's own serializer, with its configuration; a model whose
    # schema build is deferred renders the same.
    assert (await client.get("/aliased")).json() == {"unitPrice": 3}
    assert (await client.get("/deferred")).json() == {"unitPrice": 4}


async def test_plain_values_are_serialised_by_pydantic(client: CellClient) -> None:
    assert (await client.get("/plain")).json() == {"when": "2024-05-06", "n": [1, 2]}
    assert (await client.get("/untyped")).json() == [{"sku": "a", "quantity": 1}]


async def test_none_is_204_without_body(client: CellClient) -> None:
    response = await client.delete("/nothing")
    assert response.status == 204
    assert response.content == b""
    assert "x-request-id" in response.headers


async def test_declared_status(client: CellClient) -> None:
    response = await client.post("/created", json={"sku": "a", "quantity": 1})
    assert response.status == 201


async def test_explicit_response_sets_status_and_headers(client: CellClient) -> None:
    response = await client.post("/explicit")
    assert response.status == 202
    assert response.headers["Location"] == "/lines/x"
    assert response.headers["X-A"] == "1"
    assert response.json() == {"sku": "x", "quantity": 1}


async def test_text_and_bytes_responses(client: CellClient) -> None:
    text = await client.get("/text")
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.text == "plain words"
    binary = await client.get("/bytes")
    assert binary.content_type == "application/octet-stream"
    assert binary.content == b"\x00\x01"
    assert binary.headers["Cache-Control"] == "no-store"


async def test_optional_result(client: CellClient) -> None:
    assert (await client.get("/maybe", params={"present": True})).status == 200
    assert (await client.get("/maybe", params={"present": False})).status == 204


async def test_head_answers_like_get_without_a_body(client: CellClient) -> None:
    response = await client.request("HEAD", "/model")
    assert response.status == 200
    assert response.content == b""


def test_response_rejects_impossible_status() -> None:
    with pytest.raises(ValueError, match="100-599"):
        Response(None, status=99)
