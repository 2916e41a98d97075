"""The scaler replays recorded load traces on a fake clock; each decision is checked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from orchestro.cell.scaling import Scaling
from orchestro.controller.scaler import Decision, Sample, Scaler


def replay(
    scaling: Scaling,
    load: Callable[[float], float],
    seconds: float,
    ready: int = 1,
    sample_every: float = 1.0,
) -> list[tuple[float, Decision]]:
    """Feed a sample every second and decide every tick; new replicas are ready at once."""
    scaler = Scaler(scaling)
    samples: list[Sample] = []
    decisions: list[tuple[float, Decision]] = []
    now = 0.0
    next_tick = scaling.tick
    while now < seconds:
        now = round(now + sample_every, 6)
        samples.append(Sample(now, load(now)))
        if now >= next_tick:
            next_tick += scaling.tick
            decision = scaler.decide(samples, ready, now)
            decisions.append((now, decision))
            ready = decision.desired
    return decisions


TEN = Scaling(min=1, max=20, target=10, utilization=1.0)


def test_steady_load_at_target_never_changes_scale() -> None:
    # 30 in flight at 10 per replica, with +-5% noise: within the 10% tolerance.
    decisions = replay(TEN, lambda t: 30 * (1.05 if int(t) % 2 else 0.95), 600, ready=3)
    assert {d.desired for _, d in decisions} == {3}


def test_a_step_up_panics_and_scales_within_one_tick() -> None:
    # From 4 to 64 in flight at t=100 (the benchmark's step).
    decisions = replay(TEN, lambda t: 4 if t < 100 else 64, 200, ready=1)
    before = [d for t, d in decisions if t < 100]
    assert {d.desired for d in before} == {1}
    first_after = next(d for t, d in decisions if t >= 100)
    assert first_after.panicking
    assert first_after.desired >= 2  # the panic window (6 s) saw the step at once
    settled = [d for t, d in decisions if t >= 110]
    assert all(d.desired == 7 for d in settled[:5])  # ceil(64 / 10)
    assert all(d.panicking for t, d in decisions if 100 <= t < 150)


def test_no_scale_down_while_panicking() -> None:
    # A burst of 80 for 10 s, then back to 10: panic holds the replicas for a stable window.
    decisions = replay(TEN, lambda t: 80 if 100 <= t < 110 else 10, 400, ready=1)
    peak = max(d.desired for _, d in decisions)
    assert peak == 8
    during = [d.desired for t, d in decisions if 110 <= t < 165]
    assert during
    assert min(during) == peak
    assert any(not d.panicking for t, d in decisions if t > 175)


def test_scale_down_waits_for_the_stabilisation_window_and_halves_at_most() -> None:
    scaling = Scaling(min=1, max=20, target=10, utilization=1.0, scale_down_delay=120)
    decisions = replay(scaling, lambda t: 100 if t < 60 else 5, 600, ready=10)
    assert all(d.desired == 10 for t, d in decisions if t < 60 + 120)
    first_down = next((t, d) for t, d in decisions if d.desired < 10)
    assert first_down[0] >= 180
    assert first_down[1].desired >= 5  # at most halved per decision (Knative rate 2)
    assert decisions[-1][1].desired == 1


def test_bounds_and_no_load() -> None:
    scaling = Scaling(min=2, max=4, target=10, utilization=1.0)
    decisions = replay(scaling, lambda t: 500, 120, ready=2)
    assert max(d.desired for _, d in decisions) == 4
    assert "bounded to 2..4" in decisions[-1][1].reason
    assert Scaler(scaling).decide([], ready=0, now=10).desired == 2
    idle = replay(scaling, lambda t: 0, 1000, ready=3)
    assert idle[-1][1].desired == 2


def test_latency_uses_the_ratio_rule() -> None:
    scaling = Scaling(min=1, max=10, metric="latency", target=0.1, utilization=1.0)
    # p95 of 0.3 s against a target of 0.1 s with 2 replicas: 6 replicas.
    decision = Scaler(scaling).decide([Sample(t, 0.3) for t in range(1, 61)], ready=2, now=60)
    assert decision.desired == 6


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="min \\(5\\) is more than max \\(2\\)"):
        Scaling(min=5, max=2)
    with pytest.raises(ValidationError):
        Scaling(utilization=1.5)
    assert Scaling().per_replica == 70.0  # Knative: 100 at 70%
    assert not Scaling().autoscales


def test_a_crashed_replica_is_not_scaled_away() -> None:
    # 7 desired; one crashes: 6 ready carry 60 in flight, just what 6 are meant to carry.
    samples = [Sample(t, 60) for t in range(1, 121)]
    decision = Scaler(TEN).decide(samples, ready=6, now=120, current=7)
    assert decision.desired == 7  # holding still keeps 7: the replacement stays wanted
    assert Scaler(TEN).decide(samples, ready=6, now=120).desired == 6  # ready was desired
