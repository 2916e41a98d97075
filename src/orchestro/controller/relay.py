"""The controller's output: its own lines and its replicas', relayed without ever blocking.

The controller's stdout may be a pipe nobody reads (a supervisor that only collects stderr,
a test harness, ``orchestro run ... | less`` left paused). A blocking write there would stop
the controller's event loop, its health pings with it, and its replicas would be judged hung.
So lines go into a bounded queue that one thread writes out; when the queue is full a line is
dropped and counted (``dropped``, and the ``orchestro.controller.output.dropped`` metric),
never waited for.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time

__all__ = ["OutputRelay"]


class OutputRelay:
    """Writes lines to file descriptor ``fd`` from a thread; ``line`` never blocks."""

    def __init__(self, fd: int = 1, capacity: int = 10_000) -> None:
        self._fd = fd
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        # A daemon thread: if the reader is gone for good, the process still exits.
        self._thread = threading.Thread(target=self._write, name="orchestro-output", daemon=True)
        self._thread.start()

    def line(self, text: str) -> None:
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1
            _count_dropped()

    def close(self, within: float = 1.0) -> None:
        """Write what is queued if that takes at most ``within`` seconds, then stop."""
        began = time.monotonic()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=within)  # a full queue may drain meanwhile
        self._thread.join(max(0.0, within - (time.monotonic() - began)))

    @property
    def writing(self) -> bool:
        """Whether the writer thread is still running."""
        return self._thread.is_alive()

    def _write(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            data = (text + "\n").encode(errors="replace")
            try:
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
            except OSError:  # stdout closed (the terminal went away): the line is lost
                pass


def _count_dropped() -> None:
    from ..observability.telemetry import get_telemetry

    get_telemetry().producer.counter(
        "orchestro.controller.output.dropped",
        "{line}",
        "Output lines (the controller's and its replicas') dropped because stdout was not "
        "being read.",
    ).add(1, {})
