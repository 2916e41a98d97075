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

The handler, :class:`~.buffer.BufferedHandler`, writes from a thread of its own through a
bounded buffer, so that lines never stall the event loop (see :mod:`.buffer`).

The timestamp cache is per process, as the logging configuration itself is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

from .buffer import BufferedHandler
from .context import current_request, extra_fields, trace_ids

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "RateLimitFilter",
    "TextFormatter",
    "configure_logging",
    "install_record_factory",
    "iso_time",
]

# Attributes every LogRecord has: everything else on a record is an extra field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "cell", "instance", "trace_id", "span_id", "request_id", "_orchestro"}
)

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
