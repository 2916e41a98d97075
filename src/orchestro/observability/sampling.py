"""Sampling: whether a request's trace is recorded, decided before any span is made.

The OpenTelemetry SDK asks its sampler only once it is starting a span: the span object,
the extracted parent context and the attached context are made for every request, sampled
or not (with a 1% ratio sampler the gateway still served about half its unsampled rate).
orchestro therefore takes the decision itself, first, for the samplers the specification
names (``OTEL_TRACES_SAMPLER``: ``parentbased_always_on`` — the default —,
``parentbased_always_off``, ``parentbased_traceidratio``, ``always_on``, ``always_off``,
``traceidratio``, with ``OTEL_TRACES_SAMPLER_ARG`` the ratio). A request its sampling drops
costs what a request costs when nothing records spans; its trace context still passes on,
with the *sampled* flag clear so that the cells it calls drop it too.

The decision is the SDK sampler's own, made on the same inputs: the caller's
``traceparent`` (its sampled flag, for parent-based samplers) and the trace id (its low 64
bits against the ratio's bound). For a request that starts a trace, the trace id drawn for
the decision is the one the SDK's span then gets (:class:`RequestIds`), so that a span
recorded at a ratio is one whose trace id passes that ratio, as in every other service.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from ..errors import ConfigurationError

__all__ = ["Decide", "RequestIds", "Sampling", "new_trace_id"]

_LOW_64 = (1 << 64) - 1
_NAMES = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
_bits = random.getrandbits

# decide(caller's trace flags or None when the request starts a trace, trace id) -> sampled
Decide = Callable[[int | None, int], bool]


@dataclass(frozen=True, slots=True)
class Sampling:
    """One of the specification's samplers, as a decision orchestro takes itself."""

    name: str = "parentbased_always_on"
    rate: float = 1.0  # of the trace-id ratio samplers; 1.0 or 0.0 for the others

    @classmethod
    def from_environment(cls) -> Sampling:
        """The sampler ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` name."""
        name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if name not in _NAMES:
            *others, last = _NAMES
            raise ConfigurationError(
                f"OTEL_TRACES_SAMPLER={name!r} is not supported: use {', '.join(others)} or {last}"
            )
        if not name.endswith("traceidratio"):
            return cls(name, 0.0 if name.endswith("always_off") else 1.0)
        raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ConfigurationError(
                f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a ratio: use a number from 0 to 1 "
                f"(the share of traces {name} records)"
            )
        return cls(name, rate)

    @property
    def parent_based(self) -> bool:
        return self.name.startswith("parentbased_")

    @property
    def bound(self) -> int:
        """Trace ids whose low 64 bits are below this are sampled (as the SDK's
        ``TraceIdRatioBased`` computes it)."""
        return round(self.rate * (_LOW_64 + 1))

    def sampler(self) -> Sampler:
        """The SDK's sampler taking the same decisions."""
        if self.name == "traceidratio":
            return TraceIdRatioBased(self.rate)
        if self.name == "parentbased_traceidratio":
            return ParentBasedTraceIdRatio(self.rate)
        return {
            "parentbased_always_on": DEFAULT_ON,
            "parentbased_always_off": DEFAULT_OFF,
            "always_on": ALWAYS_ON,
            "always_off": ALWAYS_OFF,
        }[self.name]

    def decider(self) -> Decide:
        """``decide(parent_flags, trace_id)``: whether a request is sampled, given its
        caller's trace flags (None: it starts a trace) and its trace id."""
        bound = self.bound
        if self.parent_based:

            def parent_based(flags: int | None, trace_id: int) -> bool:
                if flags is not None:
                    return bool(flags & 1)
                return (trace_id & _LOW_64) < bound

            return parent_based

        def by_trace_id(flags: int | None, trace_id: int) -> bool:
            return (trace_id & _LOW_64) < bound

        return by_trace_id


def new_trace_id() -> int:
    return _bits(128) or 1


class RequestIds(IdGenerator):
    """Random ids, as the SDK's default makes them, except that a span starting a trace gets
    the trace id its request's sampling decision was made on (:meth:`hand`), so that the
    decision and the recorded trace agree."""

    def __init__(self) -> None:
        self._handed = threading.local()

    def hand(self, trace_id: int) -> None:
        """The next trace id this thread's tracer makes is ``trace_id`` (0: none)."""
        self._handed.trace_id = trace_id

    def generate_trace_id(self) -> int:
        handed: int = getattr(self._handed, "trace_id", 0)
        if handed:
            self._handed.trace_id = 0
            return handed
        return new_trace_id()

    def generate_span_id(self) -> int:
        return _bits(64) or 1

    def is_trace_id_random(self) -> bool:
        return True
