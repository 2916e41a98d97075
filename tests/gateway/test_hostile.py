"""Hostile input over a real socket: no header makes a 500, parser errors are not amplified,
and deadlines, however far, leave nothing behind in the timer."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest
from aiohttp import web
from pydantic import BaseModel

from orchestro import CellDefinitionError, cell, service, spec_of
from orchestro.deadline import DEADLINE_HEADER
from orchestro.gateway.admission import Gate
from orchestro.gateway.app import build_gateway
from orchestro.testing import CellClient
from orchestro.timer import running_timer


class Greeting(BaseModel):
    message: str


@cell("hostile")
class Hostile:
    @service.get("/greet")
    async def greet(self, name: str = "world") -> Greeting:
        return Greeting(message=f"Hello {name}")


async def raw(client: CellClient, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; the status, headers and body of the answer."""
    host, port = client.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def request(headers: dict[str, bytes]) -> bytes:
    lines = b"".join(k.encode() + b": " + v + b"\r\n" for k, v in headers.items())
    return b"GET /greet HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + lines + b"\r\n"


HOSTILE: list[tuple[str, bytes]] = [
    (DEADLINE_HEADER, b"inf"),
    (DEADLINE_HEADER, b"-inf"),
    (DEADLINE_HEADER, b"1e400"),
    (DEADLINE_HEADER, b"9" * 400),
    (DEADLINE_HEADER, b"nan"),
    (DEADLINE_HEADER, b"-1"),
    (DEADLINE_HEADER, b"abc"),
    (DEADLINE_HEADER, b""),
    (DEADLINE_HEADER, b"\xff\xfe"),
    ("traceparent", b"00-" + b"f" * 32 + b"-" + b"f" * 16 + b"-zz"),
    ("traceparent", b"ff-" + b"0" * 200),
    ("traceparent", b"x" * 8000),
    ("tracestate", b"a=1," * 2000),
    ("x-request-id", b"r" * 5000),
    ("x-request-id", b"\xc3\x28\xa0\xa1"),
    ("x-orchestro-attempt", b"99999999999999999999999999"),
    ("x-orchestro-attempt", b"-1"),
    ("x-orchestro-caller", b"\x00admin"),
    ("User-Agent", b'"}{\\' * 100),
]


async def test_no_hostile_header_makes_a_server_error() -> None:
    async with CellClient(Hostile) as client:
        for name, value in HOSTILE:
            status, headers, body = await raw(client, request({name: value}))
            assert status < 500, (name, value[:40], body[:200])
            if status == 400 and name == DEADLINE_HEADER:
                problem = json.loads(body)
                assert headers["content-type"] == "application/problem+json"
                assert DEADLINE_HEADER in problem["detail"]


async def test_random_header_values_never_make_a_server_error() -> None:
    rng = random.Random(13)
    alphabet = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
    names = [DEADLINE_HEADER, "traceparent", "tracestate", "x-request-id", "x-orchestro-attempt"]
    async with CellClient(Hostile) as client:
        for _ in range(150):
            value = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 120))).strip()
            status, _, body = await raw(client, request({rng.choice(names): value}))
            assert status < 500, (value, body[:200])


async def test_distinct_far_deadlines_leave_no_timer_slot_behind() -> None:
    rng = random.Random(5)
    async with CellClient(Hostile) as client:
        await client.get("/greet")
        timer = running_timer()
        baseline = timer.slot_count

        async def one() -> None:
            far = rng.uniform(100_000.0, 86_400_000.0)
            response = await client.get("/greet", headers={DEADLINE_HEADER: f"{far:.3f}"})
            assert response.status == 200

        for _ in range(40):
            await asyncio.gather(*(one() for _ in range(50)))
        assert timer.slot_count == baseline
        assert timer.heap_size <= 2 * timer.slot_count + 65


async def test_malformed_requests_are_one_rate_limited_line_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with CellClient(Hostile) as client:
        for _ in range(30):
            status, headers, body = await raw(
                client, b"GET /greet HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n"
            )
            assert status == 400
            assert headers["content-type"] == "application/problem+json"
            assert json.loads(body)["status"] == 400
        metrics = (await client.get("/metrics")).text
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= 5
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    assert all("\n" not in r.getMessage() for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    (sample,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("orchestro_gateway_malformed_requests_total{")
    ]
    assert 'orchestro_cell="hostile"' in sample
    assert sample.endswith(" 30.0")


@cell("own-clash")
class Clash:
    @service.get("/status")
    async def status(self) -> Greeting:
        return Greeting(message="mine")


def test_a_service_at_a_path_the_gateway_mounts_is_refused_by_name() -> None:
    # The decorator refuses the paths it knows at import (RESERVED_PATHS); the gateway still
    # refuses any path of its own it is given at start.
    async def own(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    with pytest.raises(CellDefinitionError, match=r"'/status'.*gateway serves itself"):
        build_gateway(spec_of(Clash), Clash(), gate=Gate(), own_routes={"/status": own})


def test_the_decorator_refuses_prometheus_sd_at_import() -> None:
    with pytest.raises(CellDefinitionError, match=r"'/prometheus/sd' is reserved by the gateway"):

        @cell("sd-clash")
        class SdClash:
            @service.get("/prometheus/sd")
            async def sd(self) -> Greeting:
                return Greeting(message="mine")
