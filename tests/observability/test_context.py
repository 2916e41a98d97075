"""W3C trace context parsing and the per-request telemetry context."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestro.observability import current_request, log_fields
from orchestro.observability.context import (
    RequestContext,
    extra_fields,
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
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


# Hostile headers: every parser takes any text, and bounds what it passes on.


@given(st.text(max_size=300))
def test_any_traceparent_text_is_parsed_or_ignored(value: str) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, span_id, flags = parsed
        assert 0 < trace_id < 2**128
        assert 0 < span_id < 2**64
        assert 0 <= flags < 256


@given(
    st.integers(min_value=1, max_value=2**128 - 1),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=255),
)
def test_a_formatted_traceparent_parses_back(trace_id: int, span_id: int, flags: int) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, flags)) == (
        trace_id,
        span_id,
        flags,
    )


def test_a_later_version_needs_a_dash_after_the_known_fields() -> None:
    later = "cc" + VALID[2:]
    assert parse_traceparent(later) is not None
    assert parse_traceparent(later + "-what-follows") is not None
    assert parse_traceparent(later + "x") is None


@given(st.text(max_size=2000))
def test_any_tracestate_is_passed_on_valid_and_bounded_or_not_at_all(value: str) -> None:
    kept = parse_tracestate(value)
    if kept is not None:
        assert len(kept) <= 512
        members = kept.split(",")
        assert len(members) <= 32
        assert all(m.isascii() and "=" in m for m in members)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("rojo=1 , congo=2", "rojo=1,congo=2"),
        ("tenant@vendor=x", "tenant@vendor=x"),
        ("UPPER=1", None),  # keys are lower case
        ("a=1,a=2", None),  # a key appears once
        ("a=" + "x" * 600, None),  # longer than 512 characters
        (",".join(f"k{i}=v" for i in range(33)), None),  # more than 32 members
        ("a=\u00e9", None),
    ],
)
def test_tracestate_rules(value: str, kept: str | None) -> None:
    assert parse_tracestate(value) == kept


def test_an_invalid_tracestate_is_not_passed_on() -> None:
    rc = RequestContext("c", "i", request_id="r", traceparent=VALID, tracestate="a=1,a=2")
    assert rc.tracestate is None


@given(st.text(max_size=300))
def test_any_request_id_is_echoed_only_when_safe(value: str) -> None:
    from orchestro.gateway.pipeline import _safe_id

    if _safe_id(value):
        assert 1 <= len(value) <= 128
        assert all("\x21" <= c <= "\x7e" for c in value)
