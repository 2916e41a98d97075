"""Structured logs: every record carries the cell, instance, request id and trace ids.

:func:`configure_logging` installs a record factory, which stamps each record with the
telemetry context of the task that logged it, and one stderr handler (with
:class:`ContextFilter`, which turns the stamp into ``record.trace_id``, ``record.span_id``,
``record.request_id``, ``record.cell`` and ``record.instance``): JSON lines when stderr is not
a terminal, a readable coloured format when it is.

A JSON line::

    {"time": "2026-11-27T10:00:00.123Z", "level": "info", "logger": "shop", "message": "paid",
     "cell": "payments", "instance": "payments-vm-77-a1b2c3", "trace_id": "4bf9…",
     "span_id": "00f0…", "request_id": "9a…", "order_id": 17}

Fields given with ``extra=`` and with :func:`orchestro.observability.log_fields` are added
as keys of their own.

**Lines never stall the event loop.** The handler (:class:`BufferedHandler`) formats a record
where it is logged and hands the line to a writer thread through a bounded buffer
(:data:`BUFFER_LINES` lines). When the stream cannot keep up (a pipe nobody reads, a stuck
log shipper) new lines are dropped and counted (the metric ``orchestro.log.dropped``) rather
than blocking; once the stream takes lines again, one line says how many were dropped. At exit
(``logging.shutdown``) the buffer is flushed for up to :data:`FLUSH_TIMEOUT` seconds.

**Access lines are cheap.** When the access log goes only to orchestro's own JSON handler
(the default outside a terminal), the gateway bypasses ``logging``: it puts a tuple of the
request's values (an :data:`Entry`) into the handler's buffer, and the writer thread makes the
line from it with :class:`~.access.AccessLines` (one f-string, no ``LogRecord``) in its next
batch.
Formatting there, many lines in a row, costs a third of formatting each between two requests,
where the gateway's code has pushed the formatter out of the CPU caches. Otherwise the
gateway logs through ``logging`` as any record (see :mod:`orchestro.gateway.route_meter`).

The handlers alive (for the drop count) and the timestamp cache are per process, as the
logging configuration itself is.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, Final, TextIO

from .context import current_request, extra_fields, trace_ids

__all__ = [
    "BUFFER_LINES",
    "FLUSH_TIMEOUT",
    "BufferedHandler",
    "ContextFilter",
    "Entry",
    "JsonFormatter",
    "RateLimitFilter",
    "TextFormatter",
    "configure_logging",
    "dropped_lines",
    "flush_all",
    "install_record_factory",
    "iso_time",
]

BUFFER_LINES: Final = 10_000  # lines waiting for the stream before new ones are dropped
FLUSH_TIMEOUT: Final = 5.0  # seconds the buffer is given to drain at exit
# Seconds the writer waits, once woken, for more lines: one write per batch. Each batch
# costs the event loop a GIL hand-over or two and the caches the batch's code and lines
# displace: a busy gateway's batch is better a few hundred lines than a few dozen.
_LINGER: Final = 0.05

# Attributes every LogRecord has: everything else on a record is an extra field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "cell", "instance", "trace_id", "span_id", "request_id", "_orchestro"}
)

# What a BufferedHandler's buffer holds: a line, or a tuple whose first item makes the line
# from the tuple (``entry[0](entry)``, on the writer thread: its other items must not change).
Entry = str | tuple[Any, ...]

_process: dict[str, str | None] = {"cell": None, "instance": None}
_installed = False


def install_record_factory(cell: str | None = None, instance: str | None = None) -> None:
    """Stamp every log record with the telemetry context, taken when and where the record is
    made (idempotent). ``cell`` and ``instance`` are the process's defaults, for records made
    outside requests.

    The stamp is one private attribute, so that a caller's ``extra={"cell": ...}`` never
    collides with it; :class:`ContextFilter` (on orchestro's handler, and on any handler of
    yours) spreads it into ``record.cell``, ``record.trace_id``, ... where not already set.
    """
    global _installed
    if cell is not None:
        _process["cell"] = cell
    if instance is not None:
        _process["instance"] = instance
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request = current_request()
        ids = trace_ids()
        trace_id, span_id = ids if ids is not None else (None, None)
        stamp: tuple[str | None, ...]
        if request is not None:
            stamp = (request.cell, request.instance, request.request_id, trace_id, span_id)
        else:
            stamp = (_process["cell"], _process["instance"], None, trace_id, span_id)
        record._orchestro = (*stamp, extra_fields())
        return record

    logging.setLogRecordFactory(factory)


class ContextFilter(logging.Filter):
    """Give a record the attributes ``cell``, ``instance``, ``request_id``, ``trace_id``,
    ``span_id`` and the request's log fields (from :func:`install_record_factory`'s stamp);
    values set by the caller with ``extra=`` win. Add it to your own handlers to format them."""

    def filter(self, record: logging.LogRecord) -> bool:
        stamp = getattr(record, "_orchestro", None)
        if stamp is None:
            return True
        attributes = record.__dict__
        for key, value in zip(_CONTEXT, stamp, strict=False):
            if key not in attributes:
                attributes[key] = value
        for key, value in stamp[-1].items():
            attributes.setdefault(key, value)
        return True


_CONTEXT: Final = ("cell", "instance", "request_id", "trace_id", "span_id")


class _Stamp:
    """The last millisecond formatted and the last second: a busy gateway writes many lines a
    millisecond, and formats a second once. Each is one (number, text) pair, replaced whole,
    so that a thread reading it never pairs one's number with another's text."""

    # None: nothing formatted yet (-1 is a millisecond and a second, just before 1970).
    milli: tuple[int | None, str] = (None, "")
    second: tuple[int | None, str] = (None, "")


def iso_time(created: float, cache: type[_Stamp] = _Stamp) -> str:
    """A record's time as its lines write it: UTC, to the millisecond (``...T12:28:49.382Z``)."""
    milli = int(created * 1000)
    last = cache.milli
    if last[0] == milli:
        return last[1]
    seconds, millis = divmod(milli, 1000)
    second = cache.second
    if second[0] != seconds:
        second = cache.second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    text = f"{second[1]}.{millis:03d}Z"
    cache.milli = (milli, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("cell", "instance", "trace_id", "span_id", "request_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


_COLOURS: Final = {
    "DEBUG": "\033[2m",
    "INFO": "\033[32m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}
_RESET: Final = "\033[0m"
_DIM: Final = "\033[2m"


class TextFormatter(logging.Formatter):
    """``10:00:00.123 INFO  payments shop: paid order_id=17 [trace 4bf9…]``, coloured when
    ``colour`` is true."""

    def __init__(self, colour: bool = True) -> None:
        super().__init__()
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        level = record.levelname
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and "." not in k
        )
        cell = getattr(record, "cell", None)
        trace_id = getattr(record, "trace_id", None)
        text = (
            f"{stamp} {level:<7} {cell + ' ' if cell else ''}{record.name}: "
            f"{record.getMessage()}{' ' + extras if extras else ''}"
        )
        tail = f" [trace {trace_id[:8]}]" if trace_id else ""
        if self._colour:
            text = f"{_COLOURS.get(level, '')}{text}{_RESET}{_DIM}{tail}{_RESET}"
        else:
            text += tail
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class RateLimitFilter(logging.Filter):
    """Let ``burst`` records through per ``interval`` seconds, drop the rest, and say on the
    next record let through how many were dropped (``record.suppressed``). For lines a
    client can cause at will (malformed requests, invalid trace headers)."""

    def __init__(self, burst: int = 10, interval: float = 60.0, clock: Any = time.monotonic):
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._window = -float("inf")
        self._passed = 0
        self.suppressed = 0  # dropped since the last record let through

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now - self._window >= self._interval:
            self._window, self._passed = now, 0
        if self._passed >= self._burst:
            self.suppressed += 1
            return False
        self._passed += 1
        if self.suppressed:
            record.suppressed = self.suppressed
            record.msg = f"{record.msg} ({self.suppressed} similar lines suppressed)"
            self.suppressed = 0
        return True


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


def configure_logging(
    level: str = "info",
    format: str = "auto",
    *,
    cell: str | None = None,
    instance: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Log to ``stream`` (stderr) at ``level`` in ``format`` (``auto``, ``json``, ``text``).

    Installs the record factory; adds the handler only if the root logger has none (an
    application that configured logging itself keeps its handlers, and its records still
    carry the fields).
    """
    install_record_factory(cell, instance)
    root = logging.getLogger()
    root.setLevel(level.upper())
    if root.handlers:
        return
    stream = stream or sys.stderr
    terminal = stream.isatty()
    handler = BufferedHandler(stream)
    handler.addFilter(ContextFilter())
    if format == "json" or (format == "auto" and not terminal):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=terminal))
    root.addHandler(handler)
    # Lines a client can cause at will, one per request: at most a few a minute.
    for name in _CLIENT_CAUSED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


# OpenTelemetry's propagators warn about every oversized or malformed traceparent,
# tracestate and baggage header they see (while spans are recorded).
_CLIENT_CAUSED: Final = (
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.trace.span",
    "opentelemetry.baggage.propagation",
)
