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
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

from .context import current_request, extra_fields, trace_ids

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "install_record_factory",
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


def _iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
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
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if format == "json" or (format == "auto" and not terminal):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=terminal))
    root.addHandler(handler)
