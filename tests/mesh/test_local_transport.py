"""The local transport's admission: one deadline, and no waiting on a callee that drains."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from orchestro import DeadlineExceeded, RemoteError
from orchestro.gateway.admission import Admission, Gate
from orchestro.mesh.transports import local
from orchestro.testing import FakeClock


class Work:
    def __init__(self) -> None:
        self.calls = 0

    async def work(self) -> str:
        self.calls += 1
        return "done"


class Host:
    def __init__(self) -> None:
        self.gate = Gate()
        Admission(self.gate, "backend", max_concurrency=1)
        self.gate.open()
        self.gate.in_flight = 1  # busy: the next call waits at admission
        self.instance = Work()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The transport's clock, moved by its admission pauses (not slept)."""
    fake = FakeClock()
    monkeypatch.setattr(local, "time", SimpleNamespace(monotonic=fake.now))
    return fake


async def test_time_waited_at_admission_counts_against_the_timeout(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host()
    started: list[float] = []
    timer = local.running_timer()
    real_start = timer.start

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(timer, name)

        def start(self, when: float, task: Any) -> Any:
            started.append(when)
            return real_start(time.monotonic() + 3600, task)  # the real clock: never fires

    async def pause(delay: float) -> None:
        clock.advance(delay)
        host.gate.in_flight = 0  # the call in progress ended

    monkeypatch.setattr(local, "running_timer", Recording)
    monkeypatch.setattr(local.asyncio, "sleep", pause)
    began = clock.now()
    assert await local.call_in_process("backend", host, "work", {}, 2.0) == "done"
    assert started == [began + 2.0]  # not the full timeout again after the pause


async def test_a_callee_that_drains_while_a_call_waits_refuses_it_at_once(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host()
    slept: list[float] = []

    async def pause(delay: float) -> None:
        slept.append(delay)
        clock.advance(delay)
        host.gate.close("draining")

    monkeypatch.setattr(local.asyncio, "sleep", pause)
    with pytest.raises(RemoteError) as raised:
        await local.call_in_process("backend", host, "work", {}, 30.0)
    assert not isinstance(raised.value, DeadlineExceeded)
    assert raised.value.status == 503
    assert raised.value.problem["_unprocessed"] is True
    assert slept == [1.0]  # the busy pause, then no more: not until the deadline
    assert host.instance.calls == 0
