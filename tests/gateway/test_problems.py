"""Every error is RFC 9457 problem+json; every response carries x-request-id."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from orchestro.testing import CellClient

from .cells import Failures

PROBLEM = "application/problem+json"
Factory = Callable[..., Awaitable[CellClient]]


@pytest.fixture
async def client(cell_client: Factory) -> CellClient:
    return await cell_client(Failures)


async def test_unknown_path_is_404(client: CellClient) -> None:
    response = await client.get("/nowhere/at/all")
    assert response.status == 404
    assert response.content_type == PROBLEM
    body = response.json()
    assert body["title"] == "Not Found"
    assert body["detail"] == "no service answers /nowhere/at/all"
    assert body["instance"] == "/nowhere/at/all"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_wrong_method_is_405_with_allow(client: CellClient) -> None:
    response = await client.post("/teapot")
    assert response.status == 405
    assert response.content_type == PROBLEM
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.json()["detail"] == "POST is not allowed on /teapot; allowed: GET, HEAD"


async def test_wrong_method_on_gateway_paths(client: CellClient) -> None:
    response = await client.delete("/healthz")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"


async def test_http_error_raised_by_a_service(client: CellClient) -> None:
    response = await client.get("/teapot")
    assert response.status == 418
    assert response.content_type == PROBLEM
    assert response.headers["X-Why"] == "tea"
    body = response.json()
    assert body == {
        "type": "about:blank",
        "title": "I'm a teapot",
        "status": 418,
        "detail": "short and stout",
        "spout": 1,
        "instance": "/teapot",
        "request_id": response.headers["x-request-id"],
    }


async def test_unhandled_exception_is_500_without_traceback(
    client: CellClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="orchestro.gateway"):
        response = await client.get("/boom")
    assert response.status == 500
    assert response.content_type == PROBLEM
    body = response.json()
    rid = response.headers["x-request-id"]
    assert body["request_id"] == rid
    assert rid in body["detail"]
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    record = next(r for r in caplog.records if rid in r.getMessage())
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


async def test_pydantic_error_inside_a_service_is_500_not_422(client: CellClient) -> None:
    assert (await client.get("/validation-in-code")).status == 500


async def test_service_timeout_is_504(client: CellClient) -> None:
    response = await client.get("/slow")
    assert response.status == 504
    assert response.content_type == PROBLEM
    assert response.json()["detail"] == "service 'slow' did not answer within its timeout of 0.05 s"


async def test_a_timeout_inside_the_service_is_its_own_error(client: CellClient) -> None:
    assert (await client.get("/own-timeout")).status == 500


async def test_redirect_raised_on_purpose_passes_through(client: CellClient) -> None:
    assert client._session is not None
    async with client._session.get("/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"


async def test_internal_service_refuses_anonymous_callers(client: CellClient) -> None:
    response = await client.post("/audit", json={"sku": "a", "quantity": 1})
    assert response.status == 403
    assert response.content_type == PROBLEM
    assert response.json()["detail"] == (
        "service POST /audit of cell 'failures' is internal: only cells of the trust domain "
        "may call it; caller is anonymous (no client certificate)"
    )


async def test_internal_service_answers_a_cell(cell_client: Factory) -> None:
    client = await cell_client(Failures, caller="billing")
    response = await client.post("/audit", json={"sku": "a", "quantity": 1})
    assert response.status == 200
    assert response.json() == {"line": {"sku": "a", "quantity": 1}, "caller": "billing"}
    assert (await client.get("/whoami")).json() == "billing"


async def test_a_service_can_ask_for_its_caller(client: CellClient) -> None:
    response = await client.get("/whoami")
    assert response.status == 204  # anonymous: None


async def test_request_id_is_echoed_when_sane(client: CellClient) -> None:
    sent = "req-123.abc"
    assert (await client.get("/teapot", headers={"x-request-id": sent})).headers[
        "x-request-id"
    ] == sent
    replaced = await client.get("/teapot", headers={"x-request-id": "x" * 500})
    assert len(replaced.headers["x-request-id"]) == 24


async def test_request_ids_are_unique(client: CellClient) -> None:
    ids = {(await client.get("/nowhere")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_a_malformed_http_request_gets_a_problem_too(client: CellClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.host.port)
    writer.write(b"GET /teapot HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"Content-Type: application/problem+json" in head
    assert b"x-request-id: " in head
    problem = json.loads(body)
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    assert problem["detail"]
