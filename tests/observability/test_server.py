"""Each cell's requests are measured, traced and exposed on /metrics and /prometheus/sd."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from orchestro import HTTPError, cell, observability, service
from orchestro.testing import CapturedSpans, CellClient, read_metrics
from orchestro.testing.telemetry import Metrics

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Item(BaseModel):
    name: str


def make_shop(name: str) -> type:
    @cell(name)
    class Shop:
        @service.get("/items/{item_id}")
        async def item(self, item_id: int) -> Item:
            if item_id == 0:
                raise HTTPError(404, "no item 0")
            if item_id == 13:
                raise RuntimeError("unlucky")
            observability.log_fields(item_id=item_id)
            logging.getLogger("shop").info("looked up")
            return Item(name=f"item {item_id}")

        @service.post("/items")
        async def add(self, item: Item) -> Item:
            return item

    return Shop


async def test_requests_are_counted_by_route_method_and_status() -> None:
    async with CellClient(make_shop("metered")) as client:
        for item_id in (1, 2, 0):
            await client.get(f"/items/{item_id}")
        await client.post("/items", json={"name": "x" * 10})
        await client.get("/items/nope")  # 422: validation is measured too
    metrics = read_metrics()
    name = "http_server_request_duration_seconds_count"
    labels = {"orchestro_cell": "metered", "http_route": "/items/{item_id}"}
    assert metrics.value(name, **labels, http_response_status_code=200) == 2
    assert metrics.value(name, **labels, http_response_status_code=404) == 1
    assert metrics.value(name, **labels, http_response_status_code=422) == 1
    assert metrics.value(name, orchestro_cell="metered", http_request_method="POST") == 1
    # Buckets are in seconds: a fast request is under the first boundary of 5 ms.
    bucket = metrics.find(
        "http_server_request_duration_seconds_bucket", **labels, http_response_status_code=200
    )
    assert {sample["le"] for sample, _ in bucket} >= {"0.005", "10.0", "+Inf"}
    sizes = "http_server_request_body_size_bytes_sum"
    assert metrics.value(sizes, orchestro_cell="metered", http_request_method="POST") == len(
        b'{"name":"xxxxxxxxxx"}'
    )
    assert metrics.value("http_server_response_body_size_bytes_count", **labels) == 4


async def test_metrics_endpoint_negotiates_the_format() -> None:
    async with CellClient(make_shop("exposed")) as client:
        await client.get("/items/1")
        text = await client.get("/metrics")
        open_metrics = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert text.status == 200
    assert text.content_type == "text/plain"
    assert "# TYPE http_server_request_duration_seconds histogram" in text.text
    assert open_metrics.content_type == "application/openmetrics-text"
    assert open_metrics.text.rstrip().endswith("# EOF")
    parsed = Metrics(text.text)
    assert parsed.value("http_server_request_duration_seconds_count", orchestro_cell="exposed") == 1
    assert parsed.value("process_cpu_time_seconds_total") > 0
    # Scrapes are not requests of the cell.
    assert not parsed.find("http_server_request_duration_seconds_count", http_route="/metrics")


async def test_each_cell_of_a_process_exposes_its_own_series() -> None:
    async with (
        CellClient(make_shop("first-of-two")) as first,
        CellClient(make_shop("second-of-two")) as second,
    ):
        await first.get("/items/1")
        await second.get("/items/1")
        first_page = Metrics((await first.get("/metrics")).text)
        second_page = Metrics((await second.get("/metrics")).text)
    name = "http_server_request_duration_seconds_count"
    assert first_page.value(name, orchestro_cell="first-of-two") == 1
    assert not first_page.find(name, orchestro_cell="second-of-two")
    assert second_page.value(name, orchestro_cell="second-of-two") == 1
    assert not second_page.find(name, orchestro_cell="first-of-two")
    # Process series appear once per process: on its first cell only.
    assert bool(first_page.find("process_cpu_time_seconds_total")) != bool(
        second_page.find("process_cpu_time_seconds_total")
    )


async def test_active_requests_come_from_the_admission_gate() -> None:
    async with CellClient(make_shop("active")) as client:
        page = Metrics((await client.get("/metrics")).text)
        assert page.find("http_server_active_requests", orchestro_cell="active") == [
            ({"orchestro_cell": "active", "url_scheme": "http", **_scope(page)}, 0.0)
        ]
    assert not read_metrics().find("http_server_active_requests", orchestro_cell="active")


def _scope(page: Metrics) -> dict[str, str]:
    (labels, _), *_ = page.find("http_server_active_requests")
    return {k: v for k, v in labels.items() if k.startswith("otel_scope")}


async def test_prometheus_sd_lists_the_instance() -> None:
    async with CellClient(make_shop("discoverable")) as client:
        response = await client.get("/prometheus/sd")
        port = client.host.port
    assert response.status == 200
    (group,) = response.json()
    assert group["targets"] == [f"127.0.0.1:{port}"]
    assert group["labels"]["cell"] == "discoverable"
    assert group["labels"]["instance"] == client.host.instance_id


async def test_requests_no_route_matched_are_counted_without_a_route() -> None:
    async with CellClient(make_shop("unmatched")) as client:
        assert (await client.get("/nothing/here")).status == 404
        assert (await client.delete("/items/1")).status == 405
        assert (await client.request("PROPFIND", "/coffee")).status == 404
    metrics = read_metrics()
    name = "http_server_request_duration_seconds_count"
    found = metrics.find(name, orchestro_cell="unmatched")
    # No http.route (the Prometheus exporter shows a label other series have as empty).
    assert found
    assert all(labels.get("http_route", "") == "" for labels, _ in found)
    assert metrics.value(name, orchestro_cell="unmatched", http_response_status_code=404) == 2
    assert metrics.value(name, orchestro_cell="unmatched", http_request_method="DELETE") == 1
    # An unknown method is "_OTHER", as the semantic conventions say: bounded cardinality.
    assert metrics.value(name, orchestro_cell="unmatched", http_request_method="_OTHER") == 1
    assert metrics.value(name, orchestro_cell="unmatched", http_request_method="PROPFIND") == 0


async def test_a_request_no_route_matched_has_a_span_named_by_its_method(
    spans: CapturedSpans,
) -> None:
    async with CellClient(make_shop("unmatched-traced")) as client:
        await client.get("/nothing/here")
    (span,) = spans.named("GET")
    attributes = dict(span.attributes or {})
    assert "http.route" not in attributes
    assert attributes["http.response.status_code"] == 404


async def test_server_span_continues_the_callers_trace(spans: CapturedSpans) -> None:
    async with CellClient(make_shop("traced")) as client:
        await client.get("/items/7", headers={"traceparent": PARENT, "x-request-id": "r-1"})
    (span,) = spans.named("GET /items/{item_id}")
    assert span.kind is SpanKind.SERVER
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert span.parent.span_id == 0x00F067AA0BA902B7
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["url.path"] == "/items/7"
    assert attributes["http.response.status_code"] == 200
    assert attributes["orchestro.request_id"] == "r-1"
    assert span.status.status_code is StatusCode.UNSET


async def test_failures_are_recorded_on_the_span(spans: CapturedSpans) -> None:
    async with CellClient(make_shop("failing")) as client:
        assert (await client.get("/items/13")).status == 500
        assert (await client.get("/items/0")).status == 404
    failed, missing = spans.named("GET /items/{item_id}")
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "500"
    assert [e.name for e in failed.events] == ["exception"]
    assert missing.status.status_code is StatusCode.UNSET  # a 4xx is the client's error


async def test_log_lines_in_a_request_carry_its_ids(
    spans: CapturedSpans, caplog: pytest.LogCaptureFixture
) -> None:
    observability.logs.install_record_factory()
    caplog.set_level(logging.INFO)
    async with CellClient(make_shop("logged")) as client:
        await client.get("/items/5", headers={"traceparent": PARENT, "x-request-id": "r-5"})
    (record,) = [r for r in caplog.records if r.name == "shop"]
    observability.ContextFilter().filter(record)
    (span,) = spans.named("GET /items/{item_id}")
    assert span.context is not None
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
    assert record.span_id == f"{span.context.span_id:016x}"  # type: ignore[attr-defined]
    assert record.request_id == "r-5"  # type: ignore[attr-defined]
    assert record.cell == "logged"  # type: ignore[attr-defined]
    assert record.item_id == 5  # type: ignore[attr-defined]
    (access,) = [r for r in caplog.records if r.name == "orchestro.access"]
    observability.ContextFilter().filter(access)
    assert access.getMessage().startswith("GET /items/5 200 ")
    assert access.trace_id == record.trace_id  # type: ignore[attr-defined]


async def test_without_an_exporter_no_span_is_built_but_the_trace_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observability.logs.install_record_factory()
    caplog.set_level(logging.INFO)
    assert not observability.get_telemetry().recording
    async with CellClient(make_shop("unrecorded")) as client:
        await client.get("/items/5", headers={"traceparent": PARENT})
    (record,) = [r for r in caplog.records if r.name == "shop"]
    observability.ContextFilter().filter(record)
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]


async def test_a_cells_own_telemetry_joins_orchestros(
    spans: CapturedSpans, caplog: pytest.LogCaptureFixture
) -> None:
    from examples.observability.custom import Orders

    observability.logs.install_record_factory()
    caplog.set_level(logging.INFO)
    async with CellClient(Orders) as client:
        response = await client.post(
            "/orders", json={"sku": "tea", "quantity": 2, "channel": "store"}
        )
        assert response.status == 201
        page = Metrics((await client.get("/metrics")).text)
    # The cell's own metrics are on its /metrics, next to orchestro's.
    assert page.value("shop_orders_placed_total", shop_channel="store") >= 1
    assert page.value("shop_orders_quantity_count", shop_channel="store") >= 1
    assert page.value("http_server_request_duration_seconds_count", http_route="/orders") == 1
    # Its span is a child of the request's server span.
    (server,) = spans.named("POST /orders")
    (own,) = spans.named("check stock")
    assert own.parent is not None
    assert server.context is not None
    assert own.parent.span_id == server.context.span_id
    assert (own.attributes or {})["shop.sku"] == "tea"
    # Its log line carries the trace and the field it added.
    (line,) = [r for r in caplog.records if r.getMessage() == "order placed"]
    observability.ContextFilter().filter(line)
    assert line.trace_id == f"{server.context.trace_id:032x}"  # type: ignore[attr-defined]
    assert line.order_id == 1  # type: ignore[attr-defined]
    assert line.sku == "tea"  # type: ignore[attr-defined]


def test_the_load_reports_p95_is_a_sliding_window_that_reads_do_not_change() -> None:
    from orchestro.gateway.admission import Gate
    from orchestro.gateway.telemetry import P95_WINDOW, ServerTelemetry
    from orchestro.observability.context import CELL_ATTRIBUTE
    from orchestro.observability.telemetry import Telemetry

    now = [100.0]
    telemetry = Telemetry(service_name="p95", set_global=False)
    server = ServerTelemetry(telemetry, "p95", "p95-1", Gate(), clock=lambda: now[0])
    durations = server._duration.series({CELL_ATTRIBUTE: "p95", "http.route": "/x"})

    def tick() -> None:  # what the one-second fold timer does
        now[0] += 1.0
        server._remember()

    server._remember()
    for _ in range(100):
        durations.append(0.2)  # 0.25 s bucket
    tick()
    first = server.latency_p95()
    assert first == {"p95": 0.25}
    # Two readers (the controller, a dashboard) at the same moment get the same answer:
    assert server.latency_p95() == first
    assert server.latency_p95() == first
    # New, quick requests: the slow ones still count while inside the window...
    for _ in range(10):
        durations.append(0.001)
    tick()
    assert server.latency_p95() == {"p95": 0.25}
    # ... and leave it once the window has passed over them.
    for _ in range(int(P95_WINDOW) + 1):
        for _ in range(50):
            durations.append(0.001)
        tick()
    assert server.latency_p95() == {"p95": 0.005}
    server.close()
