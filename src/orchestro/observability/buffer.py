"""The log writer: a handler whose records are written by a thread of its own.

**Lines never stall the event loop.** The handler (:class:`BufferedHandler`) formats a record
where it is logged and hands the line to a writer thread through a bounded buffer
(:data:`BUFFER_LINES` lines). When the stream cannot keep up (a pipe nobody reads, a stuck
log shipper) new lines are dropped and counted (the metric ``orchestro.log.dropped``) rather
than blocking; once the stream takes lines again, one line says how many were dropped. At exit
(``logging.shutdown``) the buffer is flushed for up to :data:`FLUSH_TIMEOUT` seconds.

**Access lines are cheap.** When the access log goes only to orchestro's own JSON handler
(the default outside a terminal), the gateway bypasses ``logging``: it puts a tuple of the
request's values (an :data:`Entry`) into the handler's buffer, and the writer thread makes the
line from it with :class:`~.access.AccessLines` (no ``LogRecord``; in C where its extension
is built) in its next batch.
Formatting there, many lines in a row, costs a third of formatting each between two requests,
where the gateway's code has pushed the formatter out of the CPU caches. Otherwise the
gateway logs through ``logging`` as any record (see :mod:`orchestro.gateway.route_meter`).

The handlers alive (for the drop count) are per process, as the logging configuration is.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import threading
import time
import weakref
from typing import Any, Final, TextIO

__all__ = [
    "BUFFER_LINES",
    "FLUSH_TIMEOUT",
    "BufferedHandler",
    "Entry",
    "dropped_lines",
    "flush_all",
]

BUFFER_LINES: Final = 10_000  # lines waiting for the stream before new ones are dropped
FLUSH_TIMEOUT: Final = 5.0  # seconds the buffer is given to drain at exit
# Seconds the writer waits, once woken, for more lines: one write per batch. Each batch
# costs the event loop a GIL hand-over or two and the caches the batch's code and lines
# displace: a busy gateway's batch is better a few hundred lines than a few dozen.
_LINGER: Final = 0.05

# What a BufferedHandler's buffer holds: a line, or a tuple whose first item makes the line
# from the tuple (``entry[0](entry)``, on the writer thread: its other items must not change).
Entry = str | tuple[Any, ...]

_handlers: weakref.WeakSet[BufferedHandler] = weakref.WeakSet()


def dropped_lines() -> int:
    """Log lines this process dropped because its log stream was not writable."""
    return sum(h.dropped for h in list(_handlers))


def flush_all(timeout: float) -> None:
    """Give every buffered handler of this process up to ``timeout`` seconds in all to write
    what it holds: for an exit that skips ``logging.shutdown`` (``os._exit``)."""
    deadline = time.monotonic() + timeout
    for handler in list(_handlers):
        handler.flush(max(0.0, deadline - time.monotonic()))


class BufferedHandler(logging.Handler):
    """Formats records where they are logged, writes them from a thread of its own.

    ``emit`` (and :meth:`put`, for a line already formatted) appends to a bounded buffer and
    returns: the event loop never waits for the stream. The writer thread takes the buffer in
    batches (one ``write`` per batch); when the buffer is full, lines are dropped and counted
    (:attr:`dropped`), and one line says how many once the stream drains.
    """

    def __init__(self, stream: TextIO, capacity: int = BUFFER_LINES) -> None:
        super().__init__()
        self.stream = stream
        self.capacity = capacity
        self.dropped = 0  # lines dropped so far (read by the orchestro.log.dropped metric)
        self._reported = 0  # of which a line has said so
        self._lines: collections.deque[Entry] = collections.deque()
        self._idle = True  # the writer waits for _wake (set before it last looked)
        self._wake = threading.Event()
        self._writing = False
        self._closed = False
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None  # a StringIO in tests: written through the stream
        self._thread = threading.Thread(target=self._run, name="orchestro-log-writer", daemon=True)
        self._thread.start()
        _handlers.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.put(line)

    def put(self, line: Entry) -> None:
        """Queue one line (no newline), or an :data:`Entry` the writer makes it from; drops
        it if the buffer is full."""
        lines = self._lines
        if len(lines) >= self.capacity:
            self.dropped += 1
            return
        lines.append(line)
        if self._idle:
            self._idle = False
            self._wake.set()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds) until every queued line is written."""
        if threading.current_thread() is self._thread:
            return
        deadline = time.monotonic() + timeout
        while (self._lines or self._writing) and self._thread.is_alive():
            self._wake.set()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.001)

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()
        _handlers.discard(self)
        super().close()

    def _run(self) -> None:
        lines = self._lines
        wake = self._wake
        while True:
            # Hand-over without a lock: say "idle", then look once more, so that a line put
            # after the look finds _idle set and wakes the writer.
            self._idle = True
            if not lines:
                wake.wait()
                wake.clear()
            self._idle = False
            if self._closed and not lines:
                return
            time.sleep(_LINGER)  # let a batch gather: one write for many lines
            self._writing = True
            try:
                batch = [lines.popleft() for _ in range(len(lines))]
                self._write(batch)
                if self.dropped != self._reported and len(lines) < self.capacity // 2:
                    self._report_drops()
            finally:
                self._writing = False

    def _write(self, batch: list[Entry]) -> None:
        if not batch:
            return
        try:
            text = "\n".join([e if isinstance(e, str) else e[0](e) for e in batch]) + "\n"
        except Exception:
            text = "".join([self._made(e) for e in batch])  # one failed: write the others
        try:
            if self._fd is None:
                self.stream.write(text)
                self.stream.flush()
                return
            data = text.encode("utf-8", "backslashreplace")
            while data:  # blocks while the pipe is full: only this thread waits
                data = data[os.write(self._fd, data) :]
        except Exception:
            # A closed or broken stream: nothing to write to; count the lines as dropped.
            self.dropped += len(batch)
            self._reported = self.dropped

    def _made(self, entry: Entry) -> str:
        """The line of one entry and its newline; nothing, counted as dropped, for an entry
        that cannot be made (and not reported as the stream's fault)."""
        try:
            return (entry if isinstance(entry, str) else entry[0](entry)) + "\n"
        except Exception:
            self.dropped += 1
            self._reported += 1
            return ""

    def _report_drops(self) -> None:
        count = self.dropped - self._reported
        self._reported = self.dropped
        record = logging.getLogRecordFactory()(
            "orchestro.log",
            logging.WARNING,
            __file__,
            0,
            "%d log lines dropped: the log stream did not take them fast enough",
            (count,),
            None,
        )
        record.dropped = count
        self.filter(record)  # the ContextFilter: the process's cell and instance
        with contextlib.suppress(Exception):  # a formatter that fails: nothing to say
            self._write([self.format(record)])
