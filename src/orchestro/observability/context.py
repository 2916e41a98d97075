"""What telemetry knows about the request being served: cell, instance, request id, trace.

The gateway sets one :class:`RequestContext` per request (a context variable, so the
service's own code, the mesh client and log records all see it). Trace and span ids are made
lazily: a request that logs nothing and calls nothing pays for none of it.

When spans are recorded the server span is also OpenTelemetry's current span, and
:func:`trace_ids` prefers the current span, so that lines logged inside a user's own span
carry that span's id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from opentelemetry import trace

__all__ = [
    "RequestContext",
    "current_request",
    "format_traceparent",
    "log_fields",
    "parse_traceparent",
    "trace_ids",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_current: ContextVar[RequestContext | None] = ContextVar("orchestro_request", default=None)
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_fields: ContextVar[Mapping[str, Any]] = ContextVar("orchestro_log_fields", default=_NO_FIELDS)
_HEX = frozenset("0123456789abcdef")
_bits = random.getrandbits


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """``(trace_id, parent_span_id, flags)`` of a W3C ``traceparent``, or None if invalid."""
    if value is None or len(value) < 55:
        return None
    version, trace_hex, span_hex, flags_hex = value[:2], value[3:35], value[36:52], value[53:55]
    if (
        value[2] != "-"
        or value[35] != "-"
        or value[52] != "-"
        or version == "ff"
        or (version == "00" and len(value) != 55)
        or not _HEX.issuperset(value[:2] + trace_hex + span_hex + flags_hex)
    ):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags_hex, 16)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


class RequestContext:
    """One request as telemetry sees it (see the module's docstring)."""

    __slots__ = (
        "_parent",
        "_span_id",
        "_trace_id",
        "cell",
        "fields",
        "flags",
        "instance",
        "request_id",
        "span",
        "start",
        "token",
        "tracestate",
    )

    def __init__(
        self,
        cell: str,
        instance: str,
        request_id: str | None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.cell = cell
        self.instance = instance
        self.request_id = request_id
        self._parent = traceparent
        self._trace_id = 0
        self._span_id = 0
        self.flags = 1
        self.tracestate = tracestate
        self.fields: dict[str, Any] | None = None
        self.span: Any = None  # the recorded server span, when spans are recorded
        self.start = 0.0
        self.token: Any = None

    def _ids(self) -> None:
        parsed = parse_traceparent(self._parent)
        if parsed is None:
            self._trace_id = _bits(128)
        else:
            self._trace_id, _, self.flags = parsed
        self._span_id = _bits(64)

    @property
    def trace_id(self) -> int:
        if not self._trace_id:
            self._ids()
        return self._trace_id

    @property
    def span_id(self) -> int:
        if not self._trace_id:
            self._ids()
        return self._span_id

    def outgoing(self) -> str:
        """A ``traceparent`` for a call made while serving this request: same trace, a new
        span id (the caller's attempt), same flags."""
        return format_traceparent(self.trace_id, _bits(64), self.flags)

    def enter(self) -> None:
        self.token = _current.set(self)

    def exit(self) -> None:
        _current.reset(self.token)


def current_request() -> RequestContext | None:
    """The request being served by this task, or None outside requests."""
    return _current.get()


def trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex for log lines: the current span's, else the request's."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return f"{span.trace_id:032x}", f"{span.span_id:016x}"
    request = _current.get()
    if request is None:
        return None
    return f"{request.trace_id:032x}", f"{request.span_id:016x}"


def log_fields(**fields: Any) -> None:
    """Add ``fields`` to every log line written from here on in this request (or, outside
    requests, in this task)."""
    request = _current.get()
    if request is not None:
        request.fields = {**(request.fields or {}), **fields}
    else:
        _fields.set({**_fields.get(), **fields})


def extra_fields() -> Mapping[str, Any]:
    request = _current.get()
    if request is not None and request.fields:
        return {**_fields.get(), **request.fields}
    return _fields.get()
