"""Structured log lines carry the request's cell, instance, request id and trace ids."""

import io
import json
import logging

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
