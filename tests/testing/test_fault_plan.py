"""FaultPlan: a seeded schedule of kills, drops, errors and delays, replayed exactly."""

from __future__ import annotations

import pytest
from examples.hello import Greeter

from orchestro import CallPolicy, Mesh, RemoteError, TransportError
from orchestro.mesh.transports.base import CallRequest, CallResponse
from orchestro.registry import Instance
from orchestro.testing import (
    CellClient,
    FaultInjector,
    FaultKind,
    FaultPlan,
    MockTransport,
    Phase,
)

A = Instance(cell="greeter", id="a", host="a.invalid", port=1)
B = Instance(cell="greeter", id="b", host="b.invalid", port=2)
OTHER = Instance(cell="orders", id="o", host="o.invalid", port=3)


def drawn(plan: FaultPlan, instance: Instance, calls: int) -> list[str]:
    return [str(plan.draw(instance)) for _ in range(calls)]


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another() -> None:
    phases = (Phase(calls=10), Phase(calls=200, kill=0.05, drop=0.1, error=0.1, delay=0.1))
    first = FaultPlan(*phases, seed=42).schedule("greeter", 300)
    assert first == FaultPlan(*phases, seed=42).schedule("greeter", 300)
    assert first != FaultPlan(*phases, seed=43).schedule("greeter", 300)
    assert {fault.kind for fault in first} == {
        FaultKind.KILL, FaultKind.DROP, FaultKind.ERROR, FaultKind.DELAY
    }  # fmt: skip
    # No fault in the warm-up phase, none after the last phase ends.
    assert all(10 < fault.call <= 210 for fault in first)


def test_rates_are_shares_of_the_calls_in_their_phase() -> None:
    plan = FaultPlan(Phase(calls=10_000, error=0.2, delay=0.05), seed=7)
    kinds = [fault.kind for fault in plan.schedule("greeter", 10_000)]
    assert 1800 < kinds.count(FaultKind.ERROR) < 2200
    assert 400 < kinds.count(FaultKind.DELAY) < 600
    assert FaultKind.KILL not in kinds
    assert FaultKind.DROP not in kinds


def test_draws_follow_the_schedule_and_each_cell_has_its_own_stream() -> None:
    phases = (Phase(error=0.3, drop=0.2),)
    alone = FaultPlan(*phases, seed=5)
    mixed = FaultPlan(*phases, seed=5)
    solo = drawn(alone, A, 50)
    interleaved = []
    for _ in range(50):
        interleaved.append(str(mixed.draw(A)))
        mixed.draw(OTHER)  # calls to another cell do not shift greeter's faults
    assert solo == interleaved
    expected = {(f.call, f.kind) for f in FaultPlan(*phases, seed=5).schedule("greeter", 50)}
    assert {(f.call, f.kind) for f in alone.log} == expected
    assert len(alone.log) == len(expected) > 0


def test_a_killed_instance_is_refused_for_down_calls_then_back() -> None:
    plan = FaultPlan(Phase(calls=1, kill=1.0, down=3), seed=1)
    assert plan.draw(A).kind is FaultKind.KILL  # type: ignore[union-attr]
    assert plan.draw(B) is None  # the other instance lives (the phase is over)
    assert plan.draw(A).kind is FaultKind.REFUSED  # type: ignore[union-attr]
    assert plan.draw(A).kind is FaultKind.REFUSED  # type: ignore[union-attr]
    assert plan.draw(A) is None  # call 5 > 1 + 3: back
    assert [f.kind for f in plan.log] == [FaultKind.KILL, FaultKind.REFUSED, FaultKind.REFUSED]


def test_cells_limits_the_plan() -> None:
    plan = FaultPlan(Phase(error=1.0), seed=1, cells=["orders"])
    assert plan.draw(A) is None
    assert plan.draw(OTHER) is not None


def test_the_report_replays_the_plan() -> None:
    plan = FaultPlan(Phase(calls=5), Phase(error=0.5, status=502), seed=99, cells=["greeter"])
    drawn(plan, A, 20)
    report = plan.report()
    first = report.splitlines()[0]
    assert first == (
        "replay with: FaultPlan(Phase(calls=5), Phase(error=0.5, status=502), "
        "cells=['greeter'], seed=99)"
    )
    replay = eval(first.removeprefix("replay with: "), {"FaultPlan": FaultPlan, "Phase": Phase})
    drawn(replay, A, 20)
    assert replay.report() == report
    assert f"faults injected: {len(plan.log)} error" in report


def test_a_plan_without_a_seed_draws_one_and_says_which() -> None:
    plan = FaultPlan(Phase(error=0.1))
    assert isinstance(plan.seed, int)
    assert f"seed={plan.seed})" in plan.report()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Phase(error=1.5), "Phase(error=1.5): a rate is a share of calls; give 0 to 1"),
        (lambda: Phase(error=0.6, kill=0.6), "rates must sum to at most 1"),
        (lambda: Phase(calls=0), "Phase(calls=0): give 1 or more"),
        (lambda: Phase(status=200), "Phase(status=200): give an error status"),
        (lambda: Phase(down=0), "Phase(down=0): give 1 or more calls"),
        (lambda: FaultPlan(), "needs at least one Phase"),
        (lambda: FaultPlan(Phase(), Phase()), "phase 1 has no end (calls=None)"),
        (lambda: FaultPlan(Phase(), seed="x"), "FaultPlan(seed='x'): give an int"),  # type: ignore[arg-type]
        (lambda: FaultPlan({"error": 0.1}), "phase 1 is {'error': 0.1}; give Phase(...)"),  # type: ignore[arg-type]
    ],
)
def test_bad_plans_say_what_to_fix(make, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError)) as caught:
        make()
    assert message in str(caught.value)


async def test_each_kind_of_fault_does_what_it_says() -> None:
    reached: list[str] = []

    def answer(instance: Instance, request: CallRequest) -> dict[str, str]:
        reached.append(instance.url)
        return {"message": "hi"}

    mock = MockTransport(answer)
    faults = FaultInjector(mock)
    request = CallRequest(method="GET", path="/greet", operation="greet")

    faults.follow(FaultPlan(Phase(error=1.0, status=502), seed=1))
    response = await faults.send(A, request, 1.0)
    assert isinstance(response, CallResponse)
    assert response.status == 502
    assert reached == []  # an error answers without the cell

    faults.follow(FaultPlan(Phase(drop=1.0), seed=1))
    with pytest.raises(TransportError) as dropped:
        await faults.send(A, request, 1.0)
    assert not dropped.value.connect
    assert reached == [A.url]

    faults.follow(FaultPlan(Phase(kill=1.0), seed=1))
    with pytest.raises(TransportError) as killed:
        await faults.send(A, request, 1.0)
    assert killed.value.connect
    assert reached == [A.url]

    faults.follow(FaultPlan(Phase(delay=1.0, delay_seconds=0.05), seed=1))
    assert (await faults.send(A, request, 1.0)).status == 200
    assert reached == [A.url, A.url]
    from orchestro import DeadlineExceeded

    with pytest.raises(DeadlineExceeded):  # a delay longer than the deadline spends it
        await faults.send(A, request, 0.01)
    assert faults.injected == 5


async def test_kills_on_a_real_greeter_are_retried_on_the_other_instance() -> None:
    async with CellClient(Greeter) as one, CellClient(Greeter) as two:
        plan = FaultPlan(Phase(calls=40, kill=0.1, down=5), seed=2024)
        faults = FaultInjector().follow(plan)
        registry = f"static://greeter={one.url},greeter={two.url}"
        async with Mesh(registry, transport=faults) as calls:
            for _ in range(30):
                assert (await calls.client(Greeter).greet(name="Ada")).message
        kinds = {fault.kind for fault in plan.log}
        assert FaultKind.KILL in kinds  # the fault took effect: a kill happened
        assert faults.injected == len(plan.log)


async def test_the_same_seed_replays_the_same_faults_on_real_cells() -> None:
    def run_log(plan: FaultPlan) -> list[tuple[int, FaultKind]]:
        return [(fault.call, fault.kind) for fault in plan.log]

    logs = []
    for _ in range(2):
        async with CellClient(Greeter) as greeter:
            plan = FaultPlan(Phase(calls=5), Phase(calls=40, error=0.2, drop=0.1), seed=31)
            policy = CallPolicy(max_attempts=1)
            faults = FaultInjector().follow(plan)
            async with Mesh(
                f"static://greeter={greeter.url}", transport=faults, policy=policy
            ) as calls:
                outcomes = []
                for _ in range(50):
                    try:
                        await calls.client(Greeter).greet(name="Ada")
                        outcomes.append("ok")
                    except RemoteError as exc:
                        outcomes.append(str(exc.status))
                    except TransportError:
                        outcomes.append("dropped")
        logs.append((run_log(plan), outcomes))
    assert logs[0] == logs[1]
    assert "ok" in logs[0][1]
    assert "503" in logs[0][1]
    assert "dropped" in logs[0][1]
