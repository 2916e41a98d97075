"""Process metrics (OpenTelemetry semantic conventions, ``process.*``), observed on collection."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["instrument_process"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _cpu(options: CallbackOptions) -> Iterable[Observation]:
    times = os.times()
    yield Observation(times.user, {"cpu.mode": "user"})
    yield Observation(times.system, {"cpu.mode": "system"})


def _memory(options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(_rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak instead of the current size
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return usage if os.uname().sysname == "Darwin" else usage * 1024


def instrument_process(meter: Meter) -> None:
    """Register ``process.cpu.time``, ``process.memory.usage`` and ``process.uptime``."""
    started = time.monotonic()
    meter.create_observable_counter(
        "process.cpu.time", [_cpu], unit="s", description="Total CPU seconds by mode."
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage",
        [_memory],
        unit="By",
        description="The amount of physical memory in use (resident set size).",
    )

    def uptime(options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(time.monotonic() - started)

    meter.create_observable_gauge(
        "process.uptime", [uptime], unit="s", description="Seconds since the process started."
    )
