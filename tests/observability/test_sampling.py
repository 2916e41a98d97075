"""Sampling is decided before any span is made, exactly as the SDK's sampler would decide,
and a request it drops passes its trace on unsampled (so the cells it calls drop it too)."""

from __future__ import annotations

import contextvars
import random
import threading
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import make_mocked_request
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from orchestro import ConfigurationError
from orchestro.observability import get_telemetry
from orchestro.observability.context import (
    current_request,
    parse_traceparent,
    set_current,
    trace_ids,
)
from orchestro.observability.sampling import RequestIds, Sampling
from orchestro.testing import CapturedSpans

from .test_mesh import PARENT, TRACE_ID, Setup, over_http  # noqa: F401  (fixture)

UNSAMPLED_PARENT = PARENT[:-2] + "00"


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        (None, None, Sampling("parentbased_always_on", 1.0)),
        ("always_off", None, Sampling("always_off", 0.0)),
        ("ParentBased_TraceIdRatio", "0.25", Sampling("parentbased_traceidratio", 0.25)),
        ("traceidratio", None, Sampling("traceidratio", 1.0)),
    ],
)
def test_the_sampler_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str | None, arg: str | None, expected: Sampling
) -> None:
    for variable, value in (("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", arg)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert Sampling.from_environment() == expected


@pytest.mark.parametrize(
    ("name", "arg", "message"),
    [
        ("jaeger_remote", None, "OTEL_TRACES_SAMPLER='jaeger_remote' is not supported: use "),
        ("traceidratio", "half", "OTEL_TRACES_SAMPLER_ARG='half' is not a ratio"),
        ("parentbased_traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG='1.5' is not a ratio"),
    ],
)
def test_a_bad_sampler_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str | None, message: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(ConfigurationError) as info:
        Sampling.from_environment()
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling("parentbased_always_on"),
        Sampling("parentbased_always_off", 0.0),
        Sampling("always_on"),
        Sampling("always_off", 0.0),
        *(
            Sampling(name, rate)
            for name in ("traceidratio", "parentbased_traceidratio")
            for rate in (0.0, 0.01, 0.5, 1.0)
        ),
    ],
    ids=repr,
)
def test_the_decision_is_the_sdk_samplers_decision(sampling: Sampling) -> None:
    sampler = sampling.sampler()
    decide = sampling.decider()
    rng = random.Random(7)
    seen = set()
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        flags = rng.choice([None, 0, 1])
        parent = None
        if flags is not None:
            context = SpanContext(trace_id, 0xABC, is_remote=True, trace_flags=TraceFlags(flags))
            parent = trace.set_span_in_context(NonRecordingSpan(context))
        expected = sampler.should_sample(parent, trace_id, "GET /x").decision.is_sampled()
        assert decide(flags, trace_id) is expected, (flags, hex(trace_id))
        seen.add(expected)
    if 0.0 < sampling.rate < 1.0 or (sampling.parent_based and sampling.rate):
        assert seen == {True, False}  # both answers were exercised


def test_a_handed_trace_id_is_used_once_and_by_its_thread_only() -> None:
    ids = RequestIds()
    ids.hand(0x1234)
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(ids.generate_trace_id()))
    thread.start()
    thread.join()
    assert other[0] != 0x1234
    assert ids.generate_trace_id() == 0x1234
    assert ids.generate_trace_id() not in (0, 0x1234)
    assert ids.generate_span_id() != 0


@pytest.fixture
def one_percent() -> Iterator[None]:
    """The process's telemetry samples 1% of the traces that start here (parent-based)."""
    telemetry = get_telemetry()
    saved = telemetry.sampling, telemetry.sampled
    telemetry.sampling = Sampling("parentbased_traceidratio", 0.01)
    telemetry.sampled = telemetry.sampling.decider()
    try:
        yield
    finally:
        telemetry.sampling, telemetry.sampled = saved


@pytest.fixture
async def sampled_chain(
    over_http: Setup,  # noqa: F811
    one_percent: None,
    spans: CapturedSpans,
) -> tuple[Setup, CapturedSpans]:
    return over_http, spans


async def test_a_dropped_trace_records_nothing_and_passes_on_unsampled(
    sampled_chain: tuple[Setup, CapturedSpans],
) -> None:
    setup, spans = sampled_chain
    # A caller's unsampled trace: no span anywhere, the backend is told "not sampled".
    assert (
        await setup.frontend.get("/total", headers={"traceparent": UNSAMPLED_PARENT})
    ).status == 200
    # Traces starting here: at 1%, almost every one is dropped the same way.
    for _ in range(20):
        assert (await setup.frontend.get("/total")).status == 200
    sent = [parse_traceparent(t) for t in setup.backend.traceparents]
    assert len(sent) == 21
    assert all(p is not None for p in sent)
    dropped = [p for p in sent if p is not None and not p[2] & 1]
    assert dropped[0][0] == TRACE_ID  # the caller's trace, passed on
    recorded = {s.context.trace_id for s in spans if s.context}
    for trace_id, _, flags in (p for p in sent if p is not None):
        assert (trace_id in recorded) == bool(flags & 1)  # no orphans, no gaps
        # A root trace is kept exactly when its id passes the ratio, as the SDK decides.
        if trace_id != TRACE_ID:
            assert bool(flags & 1) == ((trace_id & (2**64 - 1)) < round(0.01 * 2**64))
    assert len(dropped) >= 15


async def test_a_sampled_caller_is_recorded_whatever_the_ratio(
    sampled_chain: tuple[Setup, CapturedSpans],
) -> None:
    setup, spans = sampled_chain
    assert (await setup.frontend.get("/total", headers={"traceparent": PARENT})).status == 200
    assert {s.context.trace_id for s in spans if s.context} == {TRACE_ID}
    assert {s.name for s in spans} >= {"GET /total", "call tm-backend.value", "GET /value"}
    (sent,) = setup.backend.traceparents
    parsed = parse_traceparent(sent)
    assert parsed is not None
    assert parsed[2] & 1


def test_a_dropped_trace_started_here_keeps_its_id_everywhere() -> None:
    # The gateway's cheap context for a dropped root request: logs and calls both use the
    # trace id the decision was taken on, with the sampled flag clear.
    def check() -> None:
        set_current(("c", "c-1", make_mocked_request("GET", "/x"), 0.0, 0xFEED))
        found = current_request()
        assert found is not None
        assert (found.trace_id, found.flags) == (0xFEED, 0)
        assert found.outgoing().startswith(f"00-{0xFEED:032x}-")
        assert found.outgoing().endswith("-00")
        assert trace_ids() == (f"{0xFEED:032x}", f"{found.span_id:016x}")

    contextvars.copy_context().run(check)  # the request context stays in there
