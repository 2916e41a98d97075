"""A callee stopped at its caller's deadline says so, and the caller reports DeadlineExceeded."""

from __future__ import annotations

import asyncio

import pytest

from orchestro import CallPolicy, Mesh, RemoteError, cell, service
from orchestro.deadline import DEADLINE_HEADER, EXPIRED_HEADER
from orchestro.errors import DeadlineExceeded
from orchestro.mesh.transports.base import CallResponse
from orchestro.testing import CellClient, MockTransport


@cell("slowpoke")
class Slowpoke:
    @service.get("/wait")
    async def wait(self) -> str:
        await asyncio.sleep(5)
        return "late"


async def test_the_gateway_stops_a_service_at_its_callers_deadline_and_says_so() -> None:
    async with CellClient(Slowpoke) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.get("/wait", headers={DEADLINE_HEADER: "50"})
        assert loop.time() - started < 4  # not the 5 s the service would take
    assert response.status == 504
    assert response.headers[EXPIRED_HEADER] == "1"
    assert "caller's deadline" in response.json()["detail"]


def answering(status: int, headers: dict[str, str]) -> MockTransport:
    body = b'{"title": "Gateway Timeout", "status": 504}'
    return MockTransport(lambda instance, request: CallResponse(status, headers, body))


async def test_a_504_at_the_callers_deadline_is_deadline_exceeded_and_not_retried() -> None:
    mock = answering(504, {EXPIRED_HEADER: "1", "Content-Type": "application/problem+json"})
    policy = CallPolicy(max_attempts=3)
    async with Mesh("static://slowpoke=http://127.0.0.1:9", transport=mock) as calls:
        with pytest.raises(DeadlineExceeded, match="stopped at the call's deadline"):
            await calls.client("slowpoke", policy=policy).get("/wait")
    assert len(mock.requests) == 1  # the deadline is spent: no retry


async def test_any_other_504_stays_a_remote_error_and_is_retried() -> None:
    mock = answering(504, {"Content-Type": "application/problem+json"})
    policy = CallPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.001)
    async with Mesh("static://slowpoke=http://127.0.0.1:9", transport=mock) as calls:
        with pytest.raises(RemoteError) as caught:
            await calls.client("slowpoke", policy=policy).get("/wait")
    assert caught.value.status == 504
    assert len(mock.requests) == 2
