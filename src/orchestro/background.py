"""Background tasks with an owner: nothing runs as a fire-and-forget task.

Every long-lived loop of a process (a registration keep-alive, a registry watch, a poller, a
timer, a controller's pinger) is started through a :class:`Background`: when its loop raises
something unexpected the failure is logged with its traceback, counted in the
``orchestro.background.failures`` metric (attribute ``orchestro.task``) and the loop is
started again after an exponential back-off (0.1 s doubling to 30 s, reset once a run lasted
a minute) — a keep-alive that hit a bug must not stop silently while its instance still
serves. ``aclose()`` cancels every task and waits for them.

```python
tasks = Background("registration")
tasks.start("keep-alive", self._keep_alive)    # a coroutine function, called again on failure
...
await tasks.aclose()
```

A loop that returns normally is finished and not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Background", "BackoffPolicy", "exponential"]

_log = logging.getLogger("orchestro.background")


def exponential(n: int, base: float, cap: float) -> float:
    """The ``n``-th delay (1, 2, ...) of an exponential back-off: ``base``, doubling, at most
    ``cap`` — the one formula of every back-off in orchestro (restarts of background loops and
    of crashed replicas, reconnections to the registry, resends of refused requests; each
    adds its own jitter). Any ``n`` is fine: a loop failing for days must not overflow."""
    if n < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(n - 1, 64))


class BackoffPolicy:
    """Delays between restarts of a failing loop: ``base`` doubling up to ``cap``; a run that
    lasted ``healthy_after`` seconds starts the sequence again."""

    def __init__(self, base: float = 0.1, cap: float = 30.0, healthy_after: float = 60.0) -> None:
        self.base = base
        self.cap = cap
        self.healthy_after = healthy_after

    def delay(self, failures: int) -> float:
        """The pause before the restart that follows ``failures`` failures in a row (>= 1)."""
        return exponential(failures, self.base, self.cap)


class Background:
    """The background tasks of one component (``owner`` names it in logs and metrics)."""

    def __init__(self, owner: str, *, backoff: BackoffPolicy | None = None) -> None:
        self.owner = owner
        self.backoff = backoff or BackoffPolicy()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Failures so far, by name, of the tasks still running (tests read it).
        self.failures: dict[str, int] = {}
        self._closed = False

    def start(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run ``loop()`` in the background, restarted whenever it raises; returns its task.
        A second ``start`` of a name still running returns the running task."""
        if self._closed:
            raise RuntimeError(f"{self.owner}: closed, cannot start {name!r}")
        running = self._tasks.get(name)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(
            self._supervise(name, loop), name=f"orchestro-{self.owner}-{name}"
        )
        self._tasks[name] = task
        # A finished task is forgotten, with its failures: a controller starts a uniquely
        # named task for every replica it spawns, so keeping them would grow without bound.
        task.add_done_callback(lambda done: self._forget(name, done))
        return task

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:  # not a newer task started under the same name
            del self._tasks[name]
            self.failures.pop(name, None)

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def cancel(self, name: str) -> None:
        """Stop one task (if running) and wait for it."""
        task = self._tasks.pop(name, None)
        self.failures.pop(name, None)
        if task is not None:
            await _cancelled(task)

    async def aclose(self) -> None:
        """Cancel every task and wait for them. Idempotent."""
        self._closed = True
        tasks, self._tasks = list(self._tasks.values()), {}
        self.failures.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            await _cancelled(task)

    async def _supervise(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        failures_in_row = 0
        while True:
            began = time.monotonic()
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - began >= self.backoff.healthy_after:
                    failures_in_row = 0
                failures_in_row += 1
                self.failures[name] = self.failures.get(name, 0) + 1
                _count(self.owner, name)
                delay = self.backoff.delay(failures_in_row)
                _log.error(
                    "%s: background task %s failed (%s: %s); restarting in %.1f s",
                    self.owner,
                    name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=exc,
                )
            await asyncio.sleep(delay)


def _count(owner: str, name: str) -> None:
    from .observability.telemetry import get_telemetry

    counter = get_telemetry().producer.counter(
        "orchestro.background.failures",
        "{failure}",
        "Unexpected failures of a background task (each is logged and the task restarted).",
    )
    counter.add(1, {"orchestro.component": owner, "orchestro.task": name})


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
