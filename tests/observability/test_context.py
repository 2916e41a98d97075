"""W3C trace context parsing and the per-request telemetry context."""

import pytest

from orchestro.observability import current_request, log_fields
from orchestro.observability.context import (
    RequestContext,
    extra_fields,
    format_traceparent,
    parse_traceparent,
    trace_ids,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parses_a_valid_traceparent() -> None:
    assert parse_traceparent(VALID) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
    )
    assert format_traceparent(*parse_traceparent(VALID)) == VALID  # type: ignore[misc]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.replace("-01", "-0x"),
        VALID.upper(),  # W3C: lowercase hex only
        "ff" + VALID[2:],  # version ff is invalid
        VALID + "-extra",  # version 00 has exactly four fields
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        VALID.replace("-", "_"),
    ],
)
def test_rejects_invalid_traceparents(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_future_versions_may_carry_more_fields() -> None:
    assert parse_traceparent("01" + VALID[2:] + "-future") is not None


def test_a_request_continues_its_callers_trace() -> None:
    rc = RequestContext(
        "orders", "orders-1", request_id="req-1", traceparent=VALID, tracestate="k=v"
    )
    rc.enter()
    try:
        assert current_request() is rc
        assert rc.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
        assert rc.span_id not in (0, 0x00F067AA0BA902B7)
        outgoing = parse_traceparent(rc.outgoing())
        assert outgoing is not None
        assert outgoing[0] == rc.trace_id
        assert outgoing[2] == 1
        assert outgoing[1] != rc.span_id  # the attempt's own span id
        assert trace_ids() == (f"{rc.trace_id:032x}", f"{rc.span_id:016x}")
    finally:
        rc.exit()
    assert current_request() is None
    assert trace_ids() is None


def test_a_request_without_traceparent_starts_a_trace() -> None:
    first = RequestContext("a", "a-1", traceparent="not a traceparent")
    second = RequestContext("a", "a-1")
    assert first.trace_id
    assert second.trace_id
    assert first.trace_id != second.trace_id


def test_log_fields_belong_to_the_request() -> None:
    rc = RequestContext("orders", "orders-1", request_id="req-1")
    rc.enter()
    try:
        log_fields(order_id=17)
        log_fields(customer="ada")
        assert extra_fields() == {"order_id": 17, "customer": "ada"}
    finally:
        rc.exit()
    assert "order_id" not in extra_fields()
