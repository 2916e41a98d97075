"""The deadline timer: one loop timer for many deadlines, with asyncio.timeout()'s semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from orchestro.timer import RESOLUTION, DeadlineTimer, running_timer, timer_for


class Expired(Exception):
    pass


def current() -> asyncio.Task[object]:
    task = asyncio.current_task()
    assert task is not None
    return task


async def within(timer: DeadlineTimer, seconds: float, work: Awaitable[Any]) -> Any:
    """The pattern the hot paths use, as a coroutine."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    expiry = timer.start(loop.time() + seconds, task)
    try:
        return await work
    except asyncio.CancelledError:
        if timer.expired(expiry):
            raise Expired(seconds) from None
        raise
    finally:
        timer.stop(expiry)


async def test_a_deadline_cancels_its_work_never_early() -> None:
    loop = asyncio.get_running_loop()
    timer = running_timer()
    started = loop.time()
    with pytest.raises(Expired):
        await within(timer, 0.03, asyncio.sleep(10))
    assert loop.time() - started >= 0.03
    assert len(timer) == 0


async def test_work_done_in_time_keeps_its_result_and_leaves_nothing_behind() -> None:
    timer = running_timer()
    assert await within(timer, 5.0, asyncio.sleep(0, result="done")) == "done"
    assert len(timer) == 0
    await asyncio.sleep(2 * RESOLUTION)  # nothing fires later either
    assert current().cancelling() == 0


async def test_a_stopped_deadline_does_not_fire() -> None:
    loop = asyncio.get_running_loop()
    timer = running_timer()
    task = asyncio.current_task()
    assert task is not None
    expiry = timer.start(loop.time() + RESOLUTION, task)
    timer.stop(expiry)
    await asyncio.sleep(4 * RESOLUTION)
    assert task.cancelling() == 0
    assert not expiry.fired


async def test_many_deadlines_share_one_slot_and_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    task = asyncio.current_task()
    assert task is not None
    when = loop.time() + 60
    expiries = [timer.start(when, task) for _ in range(1000)]
    assert len(timer) == 1000
    assert len(timer._due) == 1
    for expiry in expiries:
        timer.stop(expiry)
    assert len(timer) == 0


async def test_an_earlier_deadline_is_not_held_up_by_a_later_one() -> None:
    timer = running_timer()
    later = asyncio.create_task(within(timer, 30.0, asyncio.sleep(60)))
    await asyncio.sleep(0)  # the later deadline is the loop timer's now
    with pytest.raises(Expired):
        await within(timer, 0.02, asyncio.sleep(60))
    assert not later.done()
    later.cancel()
    with pytest.raises(asyncio.CancelledError):
        await later


async def test_nested_deadlines_the_outer_one_firing_is_the_outer_ones() -> None:
    timer = running_timer()
    inner_saw: list[str] = []

    async def inner() -> None:
        try:
            await within(timer, 30.0, asyncio.sleep(60))
        except asyncio.CancelledError:
            inner_saw.append("cancelled")
            raise

    with pytest.raises(Expired) as caught:
        await within(timer, 0.02, inner())
    assert caught.value.args == (0.02,)
    assert inner_saw == ["cancelled"]  # the inner deadline did not claim the cancellation
    assert current().cancelling() == 0


async def test_nested_deadlines_the_inner_one_firing_is_the_inner_ones() -> None:
    timer = running_timer()

    async def inner() -> str:
        try:
            await within(timer, 0.02, asyncio.sleep(60))
        except Expired:
            return "inner expired"
        return "finished"

    assert await within(timer, 30.0, inner()) == "inner expired"


async def test_a_cancelled_caller_is_cancelled_not_expired() -> None:
    timer = running_timer()
    task = asyncio.create_task(within(timer, 30.0, asyncio.sleep(60)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(timer) == 0


async def test_a_finished_task_is_never_cancelled() -> None:
    loop = asyncio.get_running_loop()
    timer = running_timer()
    quick = asyncio.create_task(asyncio.sleep(0))
    expiry = timer.start(loop.time() + RESOLUTION, quick)
    await quick
    await asyncio.sleep(4 * RESOLUTION)
    assert not expiry.fired
    assert not quick.cancelled()


async def test_each_loop_has_its_own_timer() -> None:
    loop = asyncio.get_running_loop()
    assert timer_for(loop) is running_timer()
    other = asyncio.new_event_loop()
    try:
        assert timer_for(other) is not timer_for(loop)
        assert timer_for(other) is timer_for(other)
    finally:
        other.close()


def test_the_timer_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional: pip install uvloop")

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Expired):
            await within(running_timer(), 0.03, asyncio.sleep(10))
        return loop.time() - started

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) >= 0.03


# Hostile deadlines: memory is bounded by the deadlines pending, whatever callers ask for.


async def test_distinct_far_deadlines_free_their_slots_when_stopped() -> None:
    import random

    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    task = current()
    baseline = timer.slot_count
    rng = random.Random(7)
    for _ in range(20_000):  # one distinct far-future deadline per "request"
        expiry = timer.start(loop.time() + rng.uniform(0.01, 80_000.0), task)
        timer.stop(expiry)
    assert timer.slot_count == baseline
    assert timer.heap_size <= 2 * timer.slot_count + 65  # stale heap entries are bounded too
    assert len(timer) == 0


async def test_deadlines_far_away_share_coarse_slots() -> None:
    from orchestro.timer import COARSE, NEAR

    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    task = current()
    now = loop.time()
    expiries = [timer.start(now + NEAR + 1 + i * 0.001, task) for i in range(5_000)]
    # 5 s of distinct deadlines: a handful of one-second slots, not a thousand 5 ms ones.
    assert timer.slot_count <= 5 / COARSE + 2
    for expiry in expiries:
        timer.stop(expiry)
    assert timer.slot_count == 0


@pytest.mark.parametrize("when", [float("inf"), float("nan"), 1e300])
async def test_absurd_deadlines_are_not_armed_and_never_raise(when: float) -> None:
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    expiry = timer.start(when, current())
    assert timer.slot_count == 0
    timer.stop(expiry)
    await asyncio.sleep(2 * RESOLUTION)
    assert not expiry.fired
    assert current().cancelling() == 0


class _Loop:
    """Enough of an event loop for the timer's arithmetic: a clock and call_at."""

    now = 1000.0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, *args: Any) -> Any:
        return self

    def cancel(self) -> None:
        pass


class _Task:
    def cancelling(self) -> int:
        return 0


def test_a_deadline_is_never_armed_early_and_far_ones_at_most_a_coarse_slot_late() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from orchestro.timer import COARSE, HORIZON, NEAR

    loop = _Loop()
    timer = DeadlineTimer(loop)  # type: ignore[arg-type]

    @given(st.floats(min_value=0.0, max_value=HORIZON, allow_nan=False))
    def check(away: float) -> None:
        when = loop.now + away
        expiry = timer.start(when, _Task())  # type: ignore[arg-type]
        fires = expiry.slot * RESOLUTION
        assert fires >= when
        assert fires - when <= (COARSE if away > NEAR else RESOLUTION) + 1e-6
        timer.stop(expiry)
        assert timer.slot_count == 0

    check()
