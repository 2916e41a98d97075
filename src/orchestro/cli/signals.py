"""How a process of ``orchestro run`` reads the signals it gets (see docs/concepts/lifecycle.md).

One rule for a single process and for a controller alike:

* the first SIGINT or SIGTERM starts one graceful drain under one deadline;
* a repeat never shortens it: a SIGTERM again, or any signal within ``DUPLICATE_WINDOW``
  seconds of the first (a terminal and a shell both delivering one Ctrl-C, or uvloop running
  one signal's handler twice) is a duplicate and only noted;
* a SIGINT at least ``DUPLICATE_WINDOW`` after the first is a person pressing Ctrl-C again: a
  fast exit that still deregisters (exit code 130);
* SIGHUP (the terminal went away) drains a single process like SIGTERM; a controller reloads
  and rolls instead (its own handler), and a replica ignores it.

A replica (a process the controller started, in its own process group) is signalled by its
controller only, which never repeats itself: SIGTERM drains; SIGINT while draining forces. A
forced stop of a replica not yet draining sends SIGTERM then SIGINT at once, which the kernel
may deliver lowest number first, so a SIGTERM after a first SIGINT forces too.

The handlers stay installed until the process exits: :func:`ignore_after_loop` keeps a late
signal from killing the process by default while its event loop closes.
"""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from collections.abc import Callable

__all__ = ["DUPLICATE_WINDOW", "Mode", "StopSignals", "ignore_after_loop"]

# Below this gap a second signal is taken for a duplicate delivery, not a person's second
# Ctrl-C: a person reads "press Ctrl-C again to force" first, which takes longer.
DUPLICATE_WINDOW = 1.0


class Mode(enum.Enum):
    SINGLE = "single process"
    CONTROLLER = "controller"
    REPLICA = "replica"


class StopSignals:
    """Turns SIGINT/SIGTERM (and SIGHUP) into two events: ``drain`` and ``force``.

    ```python
    stop = StopSignals(Mode.SINGLE, say=print_line)
    stop.install(asyncio.get_running_loop())
    await stop.drain.wait()
    ```
    """

    def __init__(
        self,
        mode: Mode,
        *,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.drain = asyncio.Event()
        self.force = asyncio.Event()
        self._say = say
        self._clock = clock
        self._first: float | None = None
        self._first_signum: int | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.received, signum)
        if self.mode is Mode.SINGLE:
            loop.add_signal_handler(signal.SIGHUP, self.received, signal.SIGHUP)
        elif self.mode is Mode.REPLICA:
            loop.add_signal_handler(signal.SIGHUP, self._ignored)

    def received(self, signum: int) -> None:
        """What one delivery of ``signum`` means (public for tests with a fake clock)."""
        name = signal.Signals(signum).name
        now = self._clock()
        if self._first is None:
            self._first = now
            self._first_signum = signum
            again = "" if self.mode is Mode.REPLICA else "; press Ctrl-C again to force exit"
            self._say(f"{name}: draining{again}")
            self.drain.set()
            return
        if self.force.is_set():
            return
        if self.mode is Mode.REPLICA:
            if signal.SIGINT not in (signum, self._first_signum):
                return  # a repeat never shortens the drain
        elif signum != signal.SIGINT:
            return  # a repeat never shortens the drain
        elif now - self._first < DUPLICATE_WINDOW:
            return  # the same Ctrl-C delivered twice
        self._say(f"second {name}: exiting now (deregistering first)")
        self.force.set()

    def _ignored(self) -> None:
        pass


def ignore_after_loop() -> None:
    """Ignore stop signals from here to the exit: closing an event loop puts the default
    handlers back, and a SIGTERM then would kill a process that already drained."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
