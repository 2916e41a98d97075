"""The controller's output relay never blocks, and its events' log levels."""

from __future__ import annotations

import logging
import os
import time

import pytest

from orchestro.controller.events import EventLog
from orchestro.controller.relay import OutputRelay


def test_lines_to_a_pipe_nobody_reads_are_dropped_and_counted_never_waited_for() -> None:
    read_end, write_end = os.pipe()
    try:
        relay = OutputRelay(write_end, capacity=100)
        began = time.monotonic()
        for n in range(5000):  # ~1 MB: the pipe (64 KiB) and the queue (100) fill up
            relay.line(f"line {n} " + "x" * 200)
        elapsed = time.monotonic() - began
        assert relay.dropped > 0
        assert elapsed < 30  # it returned at all: a blocking write would hang here forever
        relay.close(within=0.1)  # the writer is stuck on the full pipe: close does not wait
    finally:
        os.close(read_end)  # the stuck write fails now, the queue drains, the thread ends
        relay.close(within=30)
        # Only then may the descriptor go: a later pipe reusing its number would get the
        # writer's leftover lines.
        assert not relay.writing
        os.close(write_end)


def test_lines_reach_a_reader_in_order() -> None:
    read_end, write_end = os.pipe()
    relay = OutputRelay(write_end)
    for n in range(50):
        relay.line(f"line {n}")
    relay.close(within=10)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        assert reader.read().splitlines() == [f"line {n}" for n in range(50)]


@pytest.mark.parametrize(
    ("kind", "level"),
    [("reload-failed", logging.WARNING), ("killed", logging.WARNING), ("reloaded", logging.INFO)],
)
def test_events_that_mean_trouble_are_warnings(
    kind: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orchestro.controller"):
        EventLog().emit(kind, "greeter", detail="x")
    (record,) = caplog.records
    assert record.levelno == level
