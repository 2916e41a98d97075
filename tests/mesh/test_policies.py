"""Mesh policies on a fake clock: the retry budget, outlier ejection, the balancers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from orchestro.mesh.balancers import EndpointStats, make_balancer
from orchestro.mesh.balancers.hashring import ConsistentHash
from orchestro.mesh.balancers.least_in_flight import LeastInFlight
from orchestro.mesh.balancers.p2c import PeakEwmaP2C
from orchestro.mesh.balancers.round_robin import RoundRobin
from orchestro.mesh.breaker import OutlierDetector
from orchestro.mesh.budget import RetryBudget
from orchestro.testing import FakeClock

# --- retry budget -----------------------------------------------------------------------


def test_budget_allows_the_reserve_then_a_share_of_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1, window=10, clock=clock)
    assert budget.balance == 10  # the reserve: 1/s over 10 s
    spent = sum(budget.try_spend() for _ in range(50))
    assert spent == 10
    for _ in range(100):
        budget.record_request()
    assert budget.balance == pytest.approx(20)  # 20% of 100 requests
    assert sum(budget.try_spend() for _ in range(50)) == 20
    assert not budget.try_spend()


def test_budget_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=10, clock=clock)
    assert sum(budget.try_spend() for _ in range(20)) == 10
    clock.advance(5)
    assert not budget.try_spend()
    clock.advance(6)  # the retries made 11 s ago left the window
    assert budget.try_spend()


def test_budget_bounds_amplification_when_everything_fails() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock)  # defaults: 20% + 10/s over 10 s
    sent = 0
    for _second in range(60):
        for _ in range(100):  # 100 requests a second, each failing, each retried if allowed
            budget.record_request()
            sent += 1
            while budget.try_spend():
                sent += 1
                break
        clock.advance(1)
    # 1.2x the requests, plus the minimum of 10 retries a second over the 60 s
    assert sent <= 6000 * 1.2 + 10 * 60
    assert sent > 6000 * 1.2  # and the budget is actually used


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=2)


# --- outlier ejection --------------------------------------------------------------------

PEERS = [f"i{n}" for n in range(10)]


def test_ejected_after_consecutive_failures_then_probed_back() -> None:
    clock = FakeClock()
    detector = OutlierDetector(consecutive_failures=3, base_ejection=30, clock=clock)
    for _ in range(2):
        detector.record("i0", False, PEERS)
    detector.record("i0", True, PEERS)  # a success resets the count
    for _ in range(2):
        detector.record("i0", False, PEERS)
    assert detector.state("i0") == "closed"
    detector.record("i0", False, PEERS)
    assert detector.state("i0") == "open"
    assert "i0" not in detector.available(PEERS)

    clock.advance(30)
    assert detector.state("i0") == "half-open"
    assert "i0" in detector.available(PEERS)
    detector.on_pick("i0")  # the single probe
    assert "i0" not in detector.available(PEERS)
    detector.record("i0", True, PEERS)
    assert detector.state("i0") == "closed"
    assert "i0" in detector.available(PEERS)


def test_ejection_grows_with_each_ejection_up_to_the_cap() -> None:
    clock = FakeClock()
    detector = OutlierDetector(
        consecutive_failures=1, base_ejection=10, max_ejection=25, clock=clock
    )
    detector.record("i0", False, PEERS)
    clock.advance(10)
    detector.on_pick("i0")
    detector.record("i0", False, PEERS)  # the probe failed: ejected for 20 s
    clock.advance(19)
    assert detector.state("i0") == "open"
    clock.advance(1)
    detector.on_pick("i0")
    detector.record("i0", False, PEERS)  # third time: 30 s, capped at 25
    clock.advance(24.9)
    assert detector.state("i0") == "open"
    clock.advance(0.1)
    assert detector.state("i0") == "half-open"


def test_never_more_than_the_share_and_never_the_last() -> None:
    detector = OutlierDetector(consecutive_failures=1, max_ejected_share=0.2, clock=FakeClock())
    for iid in PEERS:
        detector.record(iid, False, PEERS)
    assert sum(detector.state(i) == "open" for i in PEERS) == 2  # 20% of 10

    small = OutlierDetector(consecutive_failures=1, max_ejected_share=0.1, clock=FakeClock())
    pair = ["a", "b"]
    small.record("a", False, pair)
    small.record("b", False, pair)
    assert [small.state(i) for i in pair] == ["open", "closed"]  # at least one may go
    alone = OutlierDetector(consecutive_failures=1, clock=FakeClock())
    alone.record("x", False, ["x"])
    assert alone.state("x") == "closed"  # never the last one


def test_low_success_rate_is_ejected_at_the_end_of_an_interval() -> None:
    clock = FakeClock()
    detector = OutlierDetector(
        consecutive_failures=1000, max_ejected_share=0.5, interval=10, clock=clock
    )
    peers = [f"i{n}" for n in range(6)]
    for _ in range(200):
        for iid in peers[:5]:
            detector.record(iid, True, peers)
        detector.record("i5", _ % 2 == 0, peers)  # 50% success, never 1000 in a row
    assert detector.state("i5") == "closed"
    clock.advance(10)
    detector.record("i0", True, peers)  # the interval is over: judged
    assert detector.state("i5") == "open"
    assert [detector.state(i) for i in peers[:5]] == ["closed"] * 5


def test_success_rate_needs_enough_hosts_and_requests() -> None:
    clock = FakeClock()
    detector = OutlierDetector(consecutive_failures=1000, max_ejected_share=0.5, clock=clock)
    peers = ["a", "b", "c"]  # fewer than 5 hosts: no statistics
    for n in range(200):
        detector.record("a", True, peers)
        detector.record("b", True, peers)
        detector.record("c", n % 2 == 0, peers)
    clock.advance(10)
    detector.record("a", True, peers)
    assert detector.state("c") == "closed"


def test_forget_drops_departed_instances() -> None:
    detector = OutlierDetector(consecutive_failures=1, clock=FakeClock())
    detector.record("i0", False, PEERS)
    detector.forget(["i1"])
    assert detector.state("i0") == "closed"


# --- balancers ---------------------------------------------------------------------------


def endpoints(n: int) -> list[EndpointStats]:
    return [EndpointStats(f"e{i}") for i in range(n)]


def test_peak_ewma_takes_peaks_at_once_and_decays_gently() -> None:
    stats = EndpointStats("e", decay=10)
    stats.observe(0.010, now=1.0)
    stats.observe(0.100, now=2.0)
    assert stats.ewma == 0.100  # the peak at once
    stats.observe(0.010, now=12.0)  # one decay period later
    assert stats.ewma == pytest.approx(0.010 + (0.100 - 0.010) * 0.3679, rel=1e-3)


def test_p2c_sheds_load_from_a_slow_instance() -> None:
    eps = endpoints(3)
    for e in eps:
        e.observe(0.005, now=0.0)
    eps[0].observe(0.500, now=0.0)  # one slow instance
    balancer = PeakEwmaP2C(random.Random(7))
    picks = Counter(balancer.pick(eps, None, 0.0).id for _ in range(3000))
    assert picks["e0"] == 0  # drawn, but always the costlier of the two
    assert abs(picks["e1"] - picks["e2"]) < 300


def test_p2c_counts_requests_in_flight() -> None:
    eps = endpoints(2)
    for e in eps:
        e.observe(0.01, now=0.0)
    eps[0].in_flight = 5
    assert PeakEwmaP2C(random.Random(1)).pick(eps, None, 0.0).id == "e1"


def test_round_robin_and_least_in_flight() -> None:
    eps = endpoints(3)
    rr = RoundRobin()
    assert [rr.pick(eps, None, 0).id for _ in range(6)] == ["e0", "e1", "e2"] * 2
    eps[0].in_flight, eps[1].in_flight, eps[2].in_flight = 3, 1, 2
    assert LeastInFlight().pick(eps, None, 0).id == "e1"


def test_consistent_hash_is_stable_and_moves_few_keys() -> None:
    ring = ConsistentHash()
    eps = endpoints(5)
    keys = [f"customer-{n}" for n in range(2000)]
    before = {k: ring.pick(eps, k, 0).id for k in keys}
    assert before == {k: ring.pick(eps, k, 0).id for k in keys}  # stable
    spread = Counter(before.values())
    assert min(spread.values()) > 2000 / 5 * 0.6  # virtual nodes spread keys
    after = {k: ring.pick(eps[:4], k, 0).id for k in keys}  # e4 leaves
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "e4" for k in moved)  # only e4's keys move
    assert len(moved) == spread["e4"]


def test_balancers_by_name() -> None:
    assert isinstance(make_balancer("p2c"), PeakEwmaP2C)
    assert isinstance(make_balancer("hash"), ConsistentHash)
    from orchestro import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown balancer 'random'"):
        make_balancer("random")
