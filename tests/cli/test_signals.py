"""How a process reads its stop signals: drain first, force only as lifecycle.md says."""

from __future__ import annotations

import signal

import pytest

from orchestro.cli.signals import Mode, StopSignals


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def signals(mode: Mode) -> tuple[StopSignals, Clock]:
    clock = Clock()
    return StopSignals(mode, say=lambda line: None, clock=clock), clock


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM), (signal.SIGINT,) * 2],
)
async def test_a_replica_forces_on_a_sigint_before_or_after_its_first_signal(
    first: int, second: int
) -> None:
    # The controller's forced stop sends SIGTERM then SIGINT at once; the kernel may deliver
    # the pending pair lowest number first (SIGINT, then SIGTERM).
    stop, _ = signals(Mode.REPLICA)
    stop.received(first)
    assert stop.drain.is_set()
    assert not stop.force.is_set()
    stop.received(second)
    assert stop.force.is_set()


async def test_a_replica_sigterm_again_never_forces() -> None:
    stop, _ = signals(Mode.REPLICA)
    stop.received(signal.SIGTERM)
    stop.received(signal.SIGTERM)
    assert stop.drain.is_set()
    assert not stop.force.is_set()


@pytest.mark.parametrize("mode", [Mode.SINGLE, Mode.CONTROLLER])
async def test_outside_a_replica_only_a_later_sigint_forces(mode: Mode) -> None:
    stop, clock = signals(mode)
    stop.received(signal.SIGINT)
    stop.received(signal.SIGTERM)
    stop.received(signal.SIGINT)  # the same Ctrl-C delivered twice
    assert not stop.force.is_set()
    clock.now += 1.5
    stop.received(signal.SIGTERM)
    assert not stop.force.is_set()
    stop.received(signal.SIGINT)
    assert stop.force.is_set()
