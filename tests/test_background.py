"""Background tasks: a failing loop is logged, counted and restarted; aclose stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orchestro.background import Background, BackoffPolicy, exponential
from orchestro.observability.telemetry import get_telemetry


async def test_a_failing_loop_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    restarted = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"bug number {len(runs)}")
        restarted.set()
        await asyncio.Event().wait()

    tasks = Background("test-owner", backoff=BackoffPolicy(base=0.001, cap=0.01))
    with caplog.at_level(logging.ERROR, "orchestro.background"):
        tasks.start("keep-alive", loop)
        await asyncio.wait_for(restarted.wait(), 5)
    assert len(runs) == 3
    assert tasks.failures == {"keep-alive": 2}
    assert tasks.running("keep-alive")
    messages = [r.getMessage() for r in caplog.records]
    assert any("keep-alive failed (RuntimeError: bug number 1)" in m for m in messages)
    family = get_telemetry().producer.counter("orchestro.background.failures", "", "")
    series = family.series({"orchestro.component": "test-owner", "orchestro.task": "keep-alive"})
    assert series.value == 2
    await tasks.aclose()
    assert not tasks.running("keep-alive")
    with pytest.raises(RuntimeError, match="closed"):
        tasks.start("again", loop)


async def test_a_loop_that_returns_is_not_restarted() -> None:
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    tasks = Background("test-once")
    await tasks.start("once", once)
    assert runs == [1]
    assert not tasks.running("once")
    await tasks.aclose()


def test_backoff_doubles_to_its_cap() -> None:
    policy = BackoffPolicy(base=0.1, cap=1.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_a_back_off_never_overflows_however_long_it_fails() -> None:
    # A loop failing every 30 s for a day is its 2,880th failure: 2.0 ** 2879 would raise
    # OverflowError inside the loop that handles failures.
    assert [exponential(n, 0.5, 8.0) for n in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert exponential(2_880, 0.1, 30.0) == 30.0
    assert exponential(10**9, 0.1, 30.0) == 30.0
    assert BackoffPolicy(base=0.1, cap=30.0).delay(5_000) == 30.0


async def test_finished_tasks_are_forgotten() -> None:
    async def once() -> None:
        await asyncio.sleep(0)

    tasks = Background("test-many")
    started = [tasks.start(f"spawn cell:{i}", once) for i in range(1000)]
    await asyncio.gather(*started)
    await asyncio.sleep(0)  # the done callbacks run on the next loop iteration
    assert tasks._tasks == {}
    assert tasks.failures == {}
    await tasks.aclose()


async def test_a_finished_task_does_not_forget_a_newer_one_of_its_name() -> None:
    release = asyncio.Event()

    async def once() -> None:
        return None

    async def waits() -> None:
        await release.wait()

    tasks = Background("test-reuse")
    first = tasks.start("job", once)
    await first
    second = tasks.start("job", waits)
    tasks._forget("job", first)  # the first one's done callback, late
    assert tasks._tasks == {"job": second}
    release.set()
    await second
    await asyncio.sleep(0)
    assert tasks._tasks == {}
    await tasks.aclose()
