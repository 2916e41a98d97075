"""Structured log lines carry the request's cell, instance, request id and trace ids."""

import io
import json
import logging

import pytest

from orchestro.observability import log_fields
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

    from orchestro.observability.logs import BufferedHandler, dropped_lines

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
    from orchestro.observability.logs import BufferedHandler

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


def test_the_fast_access_line_is_what_the_json_formatter_writes() -> None:
    from aiohttp.test_utils import make_mocked_request

    import orchestro.gateway.telemetry  # noqa: F401 - reads request ids
    from orchestro.gateway.pipeline import Route
    from orchestro.gateway.problem import REQUEST_ID_KEY
    from orchestro.gateway.route_meter import RouteMeter, _log_access
    from orchestro.observability import context

    class Owner:
        _telemetry = None
        _cell = "orders"
        _instance = "orders-vm-1"

    meter = RouteMeter(Owner, Route(None, "/items/{id}"))  # type: ignore[arg-type]
    meter._template = "/items/{id}"
    request = make_mocked_request(
        "GET",
        "/items/5?q=x%22",  # the message shows the target as sent (here as yarl writes it)
        headers={"User-Agent": 'ua "quoted" \u00e9', "traceparent": VALID},
    )
    request[REQUEST_ID_KEY] = "req-1"
    token = context._current.set(("orders", "orders-vm-1", request, 0.0))
    try:
        fast = json.loads(meter._access_line(request, "GET", 200, 0.0123456))
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
    assert fast == slow
