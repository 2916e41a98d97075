"""Admission control: the concurrency limit answers 503 with Retry-After."""

from __future__ import annotations

import asyncio

from orchestro import cell, service
from orchestro.config import GatewaySettings
from orchestro.testing import CellClient


@cell("limited")
class Limited:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    @service.get("/hold")
    async def hold(self) -> int:
        self.entered += 1
        await self.release.wait()
        return self.entered


async def test_requests_over_the_concurrency_limit_get_503() -> None:
    async with CellClient(Limited, settings=GatewaySettings(max_concurrency=2)) as client:
        held = [asyncio.create_task(client.get("/hold")) for _ in range(2)]
        while client.instance.entered < 2:
            await asyncio.sleep(0.01)
        refused = await client.get("/hold")
        assert refused.status == 503
        assert refused.content_type == "application/problem+json"
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["detail"] == (
            "cell 'limited' is answering its limit of 2 concurrent requests"
        )
        assert (await client.get("/healthz")).status == 200  # gateway paths are not limited
        client.instance.release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        assert client.host.gate.in_flight == 0
        assert (await client.get("/hold")).status == 200
