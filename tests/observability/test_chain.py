"""From the outside: one request through three cells in two processes is one trace, and the
log lines of both processes carry its id (spans exported by OTLP to a sink run here)."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..conftest import Cli, start_cli

pytestmark = pytest.mark.slow

CHAIN = """
import logging

from orchestro import cell, mesh, service

log = logging.getLogger("chain")


@cell("chain-leaf", port=0)
class Leaf:
    @service.get("/leaf")
    async def leaf(self) -> str:
        log.info("leaf reached")
        return "leaf"


@cell("chain-middle", port=0)
class Middle:
    leaf = mesh.client(Leaf)

    @service.get("/middle")
    async def middle(self) -> str:
        return "middle>" + await self.leaf.leaf()


@cell("chain-front", port=0)
class Front:
    middle = mesh.client(Middle)

    @service.get("/front")
    async def front(self) -> str:
        return "front>" + await self.middle.middle()
"""


class Sink:
    """An OTLP/HTTP trace receiver: keeps every span with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []

    async def export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    found = Sink()
    app = web.Application()
    app.router.add_post("/v1/traces", found.export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield found, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_request_through_three_cells_is_one_trace(
    tmp_path: Path, sink: tuple[Sink, str], cli_processes: list[Cli]
) -> None:
    receiver, endpoint = sink
    module = tmp_path / "chain.py"
    module.write_text(textwrap.dedent(CHAIN))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    backend = await start_cli(
        "run", str(module), "--cell", "chain-middle", "--cell", "chain-leaf", env=env
    )
    cli_processes.append(backend)
    await backend.wait_serving(2)
    front = await start_cli("run", str(module), "--cell", "chain-front", env=env)
    cli_processes.append(front)
    url = (await front.wait_serving())["chain-front"]

    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # the front's view may take a poll to see the middle
            async with session.get(f"{url}/front") as response:
                if response.status == 200:
                    assert await response.json() == "front>middle>leaf"
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the front never reached the middle")

    def root_trace() -> bytes | None:
        roots = [
            s
            for service, s in receiver.spans
            if service == "chain-front" and s.name == "GET /front" and not s.parent_span_id  # type: ignore[attr-defined]
        ]
        return roots[-1].trace_id if roots else None  # type: ignore[attr-defined]

    async with asyncio.timeout(10):
        while True:
            trace_id = root_trace()
            if trace_id is not None:
                spans = [
                    (service, s)
                    for service, s in receiver.spans
                    if s.trace_id == trace_id  # type: ignore[attr-defined]
                ]
                if any(s.name == "GET chain-leaf.leaf" for _, s in spans):  # type: ignore[attr-defined]
                    break
            await asyncio.sleep(0.05)
    by_id = {s.span_id: (service, s) for service, s in spans}  # type: ignore[attr-defined]

    def named(name: str) -> tuple[str, Any]:
        (found,) = [(service, s) for service, s in spans if s.name == name]  # type: ignore[attr-defined]
        return found

    def parent(span: Any) -> tuple[str, Any]:
        return by_id[span.parent_span_id]

    # front: server span -> call span -> attempt (client) span ...
    front_service, front_span = named("GET /front")
    assert front_service == "chain-front"
    _, call = named("call chain-middle.middle")
    assert parent(call)[1] is front_span
    # ... -> the middle's server span, in the other process
    middle_service, middle_span = named("GET /middle")
    assert middle_service == "chain-middle"
    attempt_service, attempt = parent(middle_span)
    assert (attempt_service, attempt.name) == ("chain-front", "GET")
    assert parent(attempt)[1] is call
    # middle -> leaf in process: a client span, then the leaf's server span
    _, leaf_span = named("GET chain-leaf.leaf")
    local_service, local_client = parent(leaf_span)
    assert (local_service, local_client.name) == ("chain-middle", "GET")
    assert parent(local_client)[1] is middle_span

    hex_id = trace_id.hex()
    for cli in (front, backend):
        cli.signal(signal.SIGTERM)
        await cli.exits_with(0)
    front_lines = [json.loads(line) for line in (await front.stderr()).splitlines()]
    back_lines = [json.loads(line) for line in (await backend.stderr()).splitlines()]
    assert any(
        line.get("trace_id") == hex_id and line["logger"] == "orchestro.access"
        for line in front_lines
    )
    (leaf_line,) = [line for line in back_lines if line["message"] == "leaf reached"]
    assert leaf_line["trace_id"] == hex_id
    assert leaf_line["cell"] == "chain-middle"  # in-process calls run in the caller's request
    assert any(
        line.get("trace_id") == hex_id and line.get("cell") == "chain-middle"
        for line in back_lines
        if line["logger"] == "orchestro.access"
    )
