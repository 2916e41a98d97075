"""The deadline header's parser: every value is a bounded deadline or a clear refusal."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestro.deadline import MAX_DEADLINE_MS, InvalidDeadline, parse_deadline


def remaining_ms(value: str) -> float:
    before = time.monotonic()
    when = parse_deadline(value)
    return (when - before) * 1000.0


@given(st.text(max_size=500))
def test_any_text_is_a_bounded_deadline_or_invalid(value: str) -> None:
    try:
        ms = remaining_ms(value)
    except InvalidDeadline as exc:
        message = str(exc)
    else:
        assert -1.0 <= ms <= MAX_DEADLINE_MS + 1000.0
        return
    assert "x-orchestro-deadline-ms" in message
    assert len(message) < 300  # the value is quoted, shortened


@given(st.floats(allow_nan=False))
def test_numbers_are_clamped_to_zero_and_a_day(number: float) -> None:
    ms = remaining_ms(repr(number))
    expected = min(max(number, 0.0), MAX_DEADLINE_MS)
    assert abs(ms - expected) < 1000.0


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "9" * 400, "-inf", "-5"])
def test_huge_and_negative_values_are_clamped(value: str) -> None:
    ms = remaining_ms(value)
    assert ms <= MAX_DEADLINE_MS + 1000.0
    if value.startswith("-"):
        assert ms <= 1000.0  # already passed


@pytest.mark.parametrize("value", ["nan", "abc", "", "1_000", "0x10", "10ms"])
def test_what_is_not_a_number_is_invalid(value: str) -> None:
    with pytest.raises(InvalidDeadline, match="milliseconds remaining"):
        parse_deadline(value)
