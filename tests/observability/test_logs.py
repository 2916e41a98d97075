"""Structured log lines carry the request's cell, instance, request id and trace ids."""

import io
import json
import logging
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestro.observability import log_fields
from orchestro.observability.access import AccessLines, url_path
from orchestro.observability.buffer import BufferedHandler
from orchestro.observability.context import RequestContext
from orchestro.observability.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    install_record_factory,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    install_record_factory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_a_users_own_logger_carries_the_request_and_trace() -> None:
    logger, stream = _capture(JsonFormatter())
    rc = RequestContext("orders", "orders-vm-1", request_id="req-9", traceparent=VALID)
    rc.enter()
    try:
        log_fields(order_id=17)
        logger.info("placed %s", "order", extra={"amount_cents": 900})
    finally:
        rc.exit()
    line = json.loads(stream.getvalue())
    assert line["message"] == "placed order"
    assert line["level"] == "info"
    assert line["cell"] == "orders"
    assert line["instance"] == "orders-vm-1"
    assert line["request_id"] == "req-9"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len(line["span_id"]) == 16
    assert line["order_id"] == 17
    assert line["amount_cents"] == 900
    assert line["time"].endswith("Z")


def test_outside_requests_lines_have_no_trace() -> None:
    logger, stream = _capture(JsonFormatter())
    logger.warning("plain")
    line = json.loads(stream.getvalue())
    assert line["message"] == "plain"
    assert "trace_id" not in line
    assert "request_id" not in line


def test_exceptions_are_one_json_line() -> None:
    logger, stream = _capture(JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_extra_fields_named_like_the_context_win() -> None:
    logger, stream = _capture(JsonFormatter())
    rc = RequestContext("orders", "orders-vm-1", request_id="req-9", traceparent=VALID)
    rc.enter()
    try:
        logger.info("about another cell", extra={"cell": "payments"})
    finally:
        rc.exit()
    line = json.loads(stream.getvalue())
    assert line["cell"] == "payments"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_text_format_is_readable() -> None:
    logger, stream = _capture(TextFormatter(colour=False))
    rc = RequestContext("orders", "orders-vm-1", request_id="req-9", traceparent=VALID)
    rc.enter()
    try:
        logger.info("placed", extra={"order_id": 17})
    finally:
        rc.exit()
    text = stream.getvalue()
    assert "INFO" in text
    assert "orders" in text
    assert "placed order_id=17" in text
    assert "[trace 4bf92f35]" in text
    assert "\033[" not in text


# Lines never stall the caller: a bounded buffer, a writer thread, drops counted.


def test_a_stream_nobody_reads_drops_and_counts_instead_of_blocking() -> None:
    import os
    import re
    import time

    from orchestro.observability.buffer import BufferedHandler, dropped_lines

    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BufferedHandler(stream, capacity=500)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.logs.blocked")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        began = time.monotonic()
        for i in range(20_000):  # ~1.3 MB: far more than a pipe holds
            logger.info("line %05d %s", i, "x" * 60)
        assert time.monotonic() - began < 30  # it returned: never waited for the reader
        assert handler.dropped > 0
        assert dropped_lines() >= handler.dropped
        # Now someone reads: what was buffered arrives, then a line with the count.
        received = b""
        deadline = time.monotonic() + 20
        os.set_blocking(read_end, False)

        def reported() -> int:
            found = re.findall(r"^(\d+) log lines dropped", received.decode(), re.MULTILINE)
            return sum(int(n) for n in found)

        while reported() < handler.dropped and time.monotonic() < deadline:
            try:
                received += os.read(read_end, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
        assert reported() == handler.dropped
        lines = received.decode().splitlines()
        assert lines[0].startswith("line 00000 ")
        assert len([n for n in lines if n.startswith("line ")]) + handler.dropped == 20_000
    finally:
        logger.removeHandler(handler)
        handler.close()
        stream.close()
        os.close(read_end)


def test_close_writes_every_buffered_line_when_the_stream_is_writable() -> None:
    from orchestro.observability.buffer import BufferedHandler

    stream = io.StringIO()
    handler = BufferedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.logs.flushed")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for i in range(3000):
        logger.info("n%d", i)
    logger.removeHandler(handler)
    handler.close()  # what logging.shutdown does at exit
    assert stream.getvalue().splitlines() == [f"n{i}" for i in range(3000)]
    assert handler.dropped == 0


def _orders_meter() -> Any:
    """A route meter of the cell "orders" for /items/{id}, with no telemetry of its own."""
    import orchestro.gateway.telemetry  # noqa: F401 - reads request ids
    from orchestro.gateway.pipeline import Route
    from orchestro.gateway.route_meter import RouteMeter

    class Owner:
        _telemetry = None
        _cell = "orders"
        _instance = "orders-vm-1"

    meter = RouteMeter(Owner, Route(None, "/items/{id}"))  # type: ignore[arg-type]
    meter._template = "/items/{id}"
    return meter


def test_the_fast_access_line_is_what_the_json_formatter_writes() -> None:
    from aiohttp.test_utils import make_mocked_request

    from orchestro.gateway.problem import REQUEST_ID_KEY
    from orchestro.gateway.route_meter import _log_access
    from orchestro.observability import context

    meter = _orders_meter()
    # The fast line reads the connection's peername (aiohttp's private _transport_peername)
    # where the logging path asks request.remote: the same address, or this fails.
    protocol = mock.Mock(peername=("10.1.2.3", 4242), sockname=("127.0.0.1", 80))
    request = make_mocked_request(
        "GET",
        "/items/5?q=x%22",  # the message shows the target as sent (here as yarl writes it)
        headers={"User-Agent": 'ua "quoted" \u00e9', "traceparent": VALID},
        protocol=protocol,
    )
    request[REQUEST_ID_KEY] = "req-1"
    token = context._current.set(("orders", "orders-vm-1", request, 0.0))
    try:
        entry = meter._access_entry(request, "GET", 200, 0.0123456)
        fast = json.loads(entry[0](entry))
        logger, stream = _capture(JsonFormatter())
        access = logging.getLogger("orchestro.access")
        access.addHandler(logger.handlers[0])
        saved = access.propagate, access.level
        access.propagate, access.level = False, logging.INFO
        try:
            _log_access(request, "GET", 200, 0.0123456, "/items/{id}")
        finally:
            access.removeHandler(logger.handlers[0])
            access.propagate, access.level = saved
    finally:
        context._current.reset(token)
    slow = json.loads(stream.getvalue())
    for line in (fast, slow):
        line.pop("time")
        line.pop("span_id", None)  # random for a request whose context nothing made whole
    assert fast.pop("duration_ms") == pytest.approx(slow.pop("duration_ms"), abs=1e-3)
    assert fast["client.address"] == "10.1.2.3"
    assert fast == slow


async def test_the_access_line_s_path_and_fields_are_the_request_s_for_any_target() -> None:
    """The writer thread makes the line from the request target as sent: its url.path is
    what aiohttp's request.path says, for targets with escapes, fragments, an absolute
    form; quotes, backslashes and non-ASCII in the agent and request id stay valid JSON."""
    import asyncio

    from aiohttp import web

    from orchestro.gateway.problem import REQUEST_ID_KEY
    from orchestro.observability import context

    meter = _orders_meter()
    seen: list[tuple[str, dict[str, object]]] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        request[REQUEST_ID_KEY] = request.headers["X-Id"]
        context.set_current(("orders", "orders-vm-1", request, 0.0))
        log_fields(order='7 "x"')  # makes the request context whole
        entry = meter._access_entry(request, request.method, 201, 0.0021)
        seen.append((request.path, json.loads(entry[0](entry))))
        return web.Response()

    server = await asyncio.get_running_loop().create_server(web.Server(handler), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    targets = [
        ("GET", "/items/5"),
        ("GET", "/items/a%20b?x=1"),
        ("GET", "/items/a%2Fb"),
        ("GET", "/items/caf%C3%A9#frag"),
        ("GET", "/items/x?q=%22#f"),
        ("GET", "/items/5#x?y"),  # the C parser cuts at the first "?"
        ("GET", "/items/%zz"),
        ("GET", "//items//5"),
        ("OPTIONS", "*"),
        ("CONNECT", "example.com:443"),
        ("GET", f"http://127.0.0.1:{port}/items/abs?q"),
        ("GET", f"http://127.0.0.1:{port}"),
        ("GET", f"http://127.0.0.1:{port}/a/../b"),
        ("GET", f"http://127.0.0.1:{port}/%2e%2e/x"),
        ("GET", f"http://127.0.0.1:{port}/a%ffb"),
    ]
    try:
        for method, target in targets:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f'{method} {target} HTTP/1.1\r\nHost: x\r\nUser-Agent: ua "q" \\ é\r\n'
                f'X-Id: id"\\1\r\nConnection: close\r\n\r\n'.encode()
            )
            await writer.drain()
            assert (await reader.read()).startswith(b"HTTP/1.1 200"), target
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert len(seen) == len(targets)
    for (path, line), (method, target) in zip(seen, targets, strict=True):
        assert line["url.path"] == path, target
        assert line["message"] == f'{method} {target} 201 2.100ms "ua "q" \\ é"'
        assert line["request_id"] == 'id"\\1'
        assert line["client.address"] == "127.0.0.1"
        assert line["duration_ms"] == 2.1
        assert line["order"] == '7 "x"'
        assert line["http.route"] == "/items/{id}"
        assert line["http.response.status_code"] == 201


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.text(max_size=12).map(lambda t: "/" + t),  # the target: any text, as sent
            st.text(max_size=12),  # the agent
            st.one_of(st.none(), st.text(min_size=1, max_size=12)),  # the request id
            st.integers(min_value=0, max_value=10**9),  # the duration, in microseconds
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_access_line_is_json_whose_values_are_the_entry_s(
    lines: list[tuple[str, str, str | None, int]],
) -> None:
    """Line after line (the agent and the timestamp are kept while they repeat), whatever the
    target, agent and request id hold: one JSON object whose values are the entry's."""
    made = AccessLines("orders", "orders-vm-1", "/items/{id}")
    for target, agent, request_id, micros in lines:
        elapsed = micros / 1e6
        entry = (
            made.make,
            1.7e9,
            None,
            None,
            request_id,
            "GET",
            target,
            200,
            elapsed,
            agent,
            "10.0.0.1",
            "",
        )
        line = json.loads(made.make(entry))
        duration = f"{micros // 1000}.{micros % 1000:03d}"
        assert line["message"] == f'GET {target} 200 {duration}ms "{agent}"'
        assert line.get("request_id") == request_id
        assert line["duration_ms"] == float(duration)
        assert line["url.path"] == url_path(target)
        assert line["client.address"] == "10.0.0.1"


def test_an_entry_that_cannot_be_made_is_counted_as_dropped_and_the_rest_written() -> None:
    def broken(entry: tuple[object, ...]) -> str:
        raise ValueError("no line")

    stream = io.StringIO()
    handler = BufferedHandler(stream)
    handler.put("first")
    handler.put((broken, 1))
    handler.put((lambda entry: f"made {entry[1]}", 2))
    handler.close()
    assert stream.getvalue().splitlines() == ["first", "made 2"]
    assert handler.dropped == 1
