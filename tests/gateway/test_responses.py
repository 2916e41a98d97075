"""Return values become answers: models and JSON (200), None (204), Response objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pydantic import BaseModel

from orchestro import CellDefinitionError, Response, cell, service
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


class Item(BaseModel):
    sku: str
    quantity: int


class SpecialItem(Item):
    note: str = "special"


@cell("checked")
class Checked:
    @service.get("/instance")
    async def instance(self) -> Item:
        return Item(sku="tea", quantity=1)

    @service.get("/subclass")
    async def subclass(self) -> Item:
        return SpecialItem(sku="tea", quantity=1)

    @service.get("/dict")
    async def as_dict(self) -> Item:
        return {"sku": "tea", "quantity": "2"}  # type: ignore[return-value]

    @service.get("/bad-dict")
    async def bad_dict(self) -> Item:
        return {"sku": "tea"}  # type: ignore[return-value]

    @service.get("/wrong-model")
    async def wrong_model(self) -> list[Item]:
        return [Item(sku="a", quantity=1), 7]  # type: ignore[list-item]

    @service.get("/response")
    async def response(self) -> Response[int]:
        return Response(["ten"], status=201)  # (a str would be sent as text/plain)

    @service.get("/anything")
    async def anything(self):  # type: ignore[no-untyped-def]
        return object()


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/instance", 200, {"sku": "tea", "quantity": 1}),
        ("/subclass", 200, {"sku": "tea", "quantity": 1}),  # the annotated model's fields
        ("/dict", 200, {"sku": "tea", "quantity": 2}),  # validated into the model, as FastAPI
    ],
)
async def test_answers_that_fit_their_annotation(
    cell_client: Factory, path: str, status: int, body: object
) -> None:
    response = await (await cell_client(Checked)).get(path)
    assert (response.status, response.json()) == (status, body)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (
            "/bad-dict",
            "Checked.bad_dict returned a value that does not match its return "
            "annotation Item: quantity: Field required",
        ),
        (
            "/wrong-model",
            "Checked.wrong_model returned a value that does not match its return "
            "annotation list[tests.gateway.test_responses.Item]: 1: Input should be a valid "
            "dictionary or object to extract fields from (got 7)",
        ),
        (
            "/response",
            "Checked.response returned a value that does not match its return "
            "annotation int: value: Input should be a valid integer",
        ),
        (
            "/anything",
            "Checked.anything returned a value that does not match its return "
            "annotation Any: Unable to serialize unknown type: <class 'object'>",
        ),
    ],
)
async def test_answers_that_do_not_fit_are_a_logged_500(
    cell_client: Factory, caplog: pytest.LogCaptureFixture, path: str, logged: str
) -> None:
    response = await (await cell_client(Checked)).get(path)
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert "does not match its declared type" in response.json()["detail"]
    messages = [r.getMessage() for r in caplog.records if "does not match" in r.getMessage()]
    assert messages[0].startswith(logged), messages


class Loose(BaseModel):
    anything: object


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (
            set[object],
            r"Bad.get: its return annotation set\[object\] contains object, which "
            "has no JSON form",
        ),
        (Loose, r"Bad.get: its return annotation Loose contains object \(in Loose.anything\)"),
        (Callable[[], int], r"Bad.get: its return annotation .* cannot be serialised as JSON"),
    ],
)
def test_return_annotations_with_no_json_form_are_refused(annotation: object, message: str) -> None:
    async def get(self: object) -> None: ...

    get.__annotations__["return"] = annotation
    with pytest.raises(CellDefinitionError, match=message):
        cell("bad")(type("Bad", (), {"get": service.get("/x")(get)}))


class Outer(BaseModel):
    inner: Inner  # defined below the cell: the check waits until the answer is served


@cell("later")
class Later:
    @service.get("/outer")
    async def outer(self) -> Outer:
        return Outer(inner=Inner(n=1))


class Inner(BaseModel):
    n: int


async def test_models_defined_after_the_cell_are_checked_when_served(cell_client: Factory) -> None:
    response = await (await cell_client(Later)).get("/outer")
    assert (response.status, response.json()) == (200, {"inner": {"n": 1}})
