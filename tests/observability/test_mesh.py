"""Mesh calls are measured and traced, over HTTP and in process, and carry the trace on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from opentelemetry.trace import SpanKind

from orchestro import Header, HTTPError, Mesh, cell, mesh, service
from orchestro.host import CellHost
from orchestro.observability.context import parse_traceparent
from orchestro.registry import Registration
from orchestro.registry.memory import MemoryRegistry
from orchestro.testing import CapturedSpans, CellClient, read_metrics

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


@cell("tm-backend")
class Backend:
    def __init__(self) -> None:
        self.failures = 0
        self.traceparents: list[str | None] = []

    @service.get("/value")
    async def value(
        self, traceparent: Annotated[str | None, Header(alias="traceparent")] = None
    ) -> int:
        self.traceparents.append(traceparent)
        if self.failures:
            self.failures -= 1
            raise HTTPError(503, "try again")
        return 42


@cell("tm-frontend")
class Frontend:
    backend = mesh.client(Backend)

    @service.get("/total")
    async def total(self) -> int:
        return await self.backend.value() + 1


class Setup:
    def __init__(self, backend: Backend, frontend: CellClient, backend_host: CellHost) -> None:
        self.backend = backend
        self.frontend = frontend
        self.backend_host = backend_host


@pytest.fixture
async def over_http() -> AsyncIterator[Setup]:
    """Frontend and backend in this process, but the frontend's mesh does not know the
    backend's host: its calls go over HTTP."""
    registry = MemoryRegistry(ttl=5)
    registration = Registration(registry)
    backend = Backend()
    host = CellHost(backend, host="127.0.0.1", port=0, registration=registration)
    await host.start()
    calls = Mesh(registry)
    await calls.start()
    try:
        async with CellClient(Frontend, mesh=calls) as frontend:
            yield Setup(backend, frontend, host)
    finally:
        await calls.aclose()
        await host.drain()
        await registration.aclose()


async def test_calls_are_measured_per_target_and_caller(over_http: Setup) -> None:
    over_http.backend.failures = 1
    assert (await over_http.frontend.get("/total")).json() == 43
    metrics = read_metrics()
    duration = "http_client_request_duration_seconds_count"
    labels = {"server_address": "tm-backend", "orchestro_cell": "tm-frontend"}
    assert metrics.value(duration, **labels, http_response_status_code=503) == 1
    assert metrics.value(duration, **labels, http_response_status_code=200) == 1
    assert metrics.value("orchestro_mesh_retries_total", **labels) == 1
    # The registry and circuit gauges are read on collection.
    assert (
        metrics.value(
            "orchestro_registry_instances",
            orchestro_registry_cell="tm-backend",
            orchestro_instance_state="ready",
        )
        == 1
    )
    (state,) = metrics.find("orchestro_mesh_breaker_state", server_address="tm-backend")
    assert state[1] == 0  # closed
    assert state[0]["orchestro_instance"] == over_http.backend_host.instance_id


async def test_the_trace_travels_without_recording(over_http: Setup) -> None:
    await over_http.frontend.get("/total", headers={"traceparent": PARENT})
    (sent,) = over_http.backend.traceparents
    parsed = parse_traceparent(sent)
    assert parsed is not None
    assert parsed[0] == TRACE_ID  # the same trace,
    assert parsed[1] != 0x00F067AA0BA902B7  # a new parent (the frontend's attempt)


async def test_a_call_is_a_span_and_each_attempt_a_client_span(
    over_http: Setup, spans: CapturedSpans
) -> None:
    over_http.backend.failures = 1
    await over_http.frontend.get("/total", headers={"traceparent": PARENT})
    (front,) = spans.named("GET /total")
    (call,) = spans.named("call tm-backend.value")
    attempts = sorted(spans.named("GET"), key=lambda s: s.start_time or 0)
    backs = sorted(spans.named("GET /value"), key=lambda s: s.start_time or 0)
    assert len(attempts) == 2
    assert len(backs) == 2
    assert {s.context.trace_id for s in spans if s.context} == {TRACE_ID}
    assert call.parent is not None
    assert front.context is not None
    assert call.parent.span_id == front.context.span_id
    for attempt, back in zip(attempts, backs, strict=True):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.parent is not None
        assert call.context is not None
        assert attempt.parent.span_id == call.context.span_id
        assert back.parent is not None
        assert attempt.context is not None
        assert back.parent.span_id == attempt.context.span_id  # injected traceparent
    assert (attempts[0].attributes or {})["http.response.status_code"] == 503
    assert "http.request.resend_count" not in (attempts[0].attributes or {})
    assert (attempts[1].attributes or {})["http.request.resend_count"] == 1
    assert (attempts[1].attributes or {})["server.address"] == "tm-backend"


async def test_local_calls_are_traced_the_same_way(spans: CapturedSpans) -> None:
    calls = Mesh("memory://")
    await calls.start()
    try:
        async with (
            CellClient(Backend, mesh=calls),
            CellClient(Frontend, mesh=calls) as frontend,
        ):
            assert (await frontend.get("/total", headers={"traceparent": PARENT})).json() == 43
    finally:
        await calls.aclose()
    (front,) = spans.named("GET /total")
    (client,) = [s for s in spans.named("GET") if s.kind is SpanKind.CLIENT]
    (server,) = spans.named("GET tm-backend.value")
    assert (client.attributes or {})["orchestro.transport"] == "local"
    assert server.kind is SpanKind.SERVER
    assert client.parent is not None
    assert front.context is not None
    assert client.parent.span_id == front.context.span_id
    assert server.parent is not None
    assert client.context is not None
    assert server.parent.span_id == client.context.span_id
    assert (
        read_metrics().value(
            "http_client_request_duration_seconds_count",
            server_address="tm-backend",
            orchestro_cell="tm-frontend",
            http_response_status_code=200,
        )
        >= 1
    )


async def test_ejections_are_counted_per_target() -> None:
    from orchestro.mesh.breaker import OutlierDetector
    from orchestro.mesh.telemetry import MeshTelemetry
    from orchestro.observability.telemetry import get_telemetry
    from orchestro.testing import FakeClock

    obs = MeshTelemetry(get_telemetry(), "tm-eject-caller")
    detector = OutlierDetector(consecutive_failures=2, max_ejected_share=0.5, clock=FakeClock())
    obs.new_target("tm-eject-target", detector)
    name = "orchestro_mesh_ejections_total"
    labels = {"server_address": "tm-eject-target", "orchestro_cell": "tm-eject-caller"}
    assert read_metrics().find(name, **labels)[0][1] == 0  # present from the first call
    peers = ["a", "b", "c"]
    detector.record("a", False, peers)
    detector.record("a", False, peers)
    assert detector.state("a") == "open"
    assert read_metrics().value(name, **labels) == 1


async def test_a_process_that_only_calls_keeps_its_measurements_bounded() -> None:
    """No gateway folds the buffered durations every second here: the mesh folds them
    itself, so plain application code making many calls holds a bounded buffer."""
    from orchestro.testing import MockTransport

    calls = 10_000
    transport = MockTransport(lambda instance, request: {"ok": True})
    async with Mesh(
        "static://tm-only-calls=http://127.0.0.1:9", transport=transport, caller="tm-script"
    ) as only_calls:
        client = only_calls.client("tm-only-calls")
        for _ in range(calls):
            await client.get("/ok")
        obs = only_calls._obs
        assert obs is not None
        buffered = [len(series.pending) for series in obs._series.values()]
    assert buffered
    assert max(buffered) < 4096
    count = read_metrics().value(
        "http_client_request_duration_seconds_count",
        server_address="tm-only-calls",
        orchestro_cell="tm-script",
        http_response_status_code=200,
    )
    assert count == calls
