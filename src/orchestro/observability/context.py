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
import re
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final

from opentelemetry import trace

__all__ = [
    "CELL_ATTRIBUTE",
    "RequestContext",
    "current_request",
    "format_traceparent",
    "log_fields",
    "task_fields",
    "parse_traceparent",
    "parse_tracestate",
    "trace_ids",
]

TRACEPARENT = "traceparent"
CELL_ATTRIBUTE = "orchestro.cell"  # the attribute naming the cell, on every series and span
TRACESTATE = "tracestate"

# A RequestContext, or the gateway's cheap form of one: (cell, instance, request, start),
# plus the trace id for a request starting a trace that its sampling dropped.
_current: ContextVar[Any] = ContextVar("orchestro_request", default=None)
set_current = _current.set
get_current = _current.get
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
        or (len(value) > 55 and value[55] != "-")  # a later version: more fields after a dash
        or not _HEX.issuperset(value[:2] + trace_hex + span_hex + flags_hex)
    ):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags_hex, 16)


# W3C Trace Context: a list-member is key=value; a key is lower-case (optionally
# tenant@system), a value printable ASCII without "," or "=" and not ending in a space.
_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
).fullmatch
MAX_TRACESTATE = 512  # characters passed on (W3C: at least 512 SHOULD be propagated)
MAX_TRACESTATE_MEMBERS = 32  # W3C's limit


def parse_tracestate(value: str | None) -> str | None:
    """``value`` if it is a valid W3C ``tracestate`` of at most :data:`MAX_TRACESTATE`
    characters and 32 members, else None: an invalid or oversized one is not passed on
    (the specification lets a vendor that cannot parse it drop it)."""
    if not value or len(value) > MAX_TRACESTATE:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    keys = set()
    for member in members:
        if not _MEMBER(member):
            return None
        key = member.partition("=")[0]
        if key in keys:  # a key appears once
            return None
        keys.add(key)
    return ",".join(members)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


class RequestContext:
    """One request as telemetry sees it (see the module's docstring).

    Built for every request, so it reads nothing it may not need: the request id and the
    caller's ``traceparent``/``tracestate`` come from ``request`` (anything with ``headers``
    and ``get``) on first use, or from the keyword arguments.
    """

    __slots__ = (
        "_request",
        "_span_id",
        "_trace_id",
        "cell",
        "fields",
        "flags",
        "instance",
        "span",
        "start",
        "token",
        "values",
    )

    # How to read the request id from a request (the gateway sets it: no import cycle).
    request_id_of: Any = None

    def __init__(
        self,
        cell: str,
        instance: str,
        request: Any = None,
        *,
        request_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.cell = cell
        self.instance = instance
        self._request = request
        self._trace_id = 0
        self._span_id = 0
        self.flags = 1
        self.fields: dict[str, Any] | None = None
        self.span: Any = None  # the recorded server span and its context token, if any
        self.start = 0.0
        self.token: Any = None
        self.values = None if request is not None else (request_id, traceparent, tracestate)

    def _read(self) -> tuple[str | None, str | None, str | None]:
        values = self.values
        if values is None:
            request = self._request
            headers = request.headers
            reader = RequestContext.request_id_of
            values = self.values = (
                reader(request) if reader is not None else None,
                headers.get(TRACEPARENT),
                headers.get(TRACESTATE),
            )
        return values

    @property
    def request_id(self) -> str | None:
        return self._read()[0]

    @property
    def tracestate(self) -> str | None:
        """The caller's ``tracestate`` if valid and bounded (:func:`parse_tracestate`)."""
        return parse_tracestate(self._read()[2])

    def _ids(self) -> None:
        parsed = parse_traceparent(self._read()[1])
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

    def start_trace(self, trace_id: int, flags: int) -> None:
        """This request starts trace ``trace_id`` (whatever its caller sent), with these
        trace flags (0: not sampled)."""
        self._trace_id, self._span_id, self.flags = trace_id, _bits(64), flags

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
    found = _current.get()
    if found is None or type(found) is RequestContext:
        return found
    # The gateway's cheap form, (cell, instance, request, start), or with a fifth item the
    # trace id of a request that starts a trace its sampling dropped: made whole on first
    # use.
    made = RequestContext(found[0], found[1], found[2])
    made.start = found[3]
    if len(found) == 5:
        made.start_trace(found[4], 0)
    _current.set(made)
    return made


def current_cell() -> str | None:
    """The cell serving the current request (without making its context whole)."""
    found = _current.get()
    if found is None:
        return None
    return str(found[0]) if type(found) is tuple else found.cell


def trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex for log lines: the current span's, else the request's."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return f"{span.trace_id:032x}", f"{span.span_id:016x}"
    request = current_request()
    if request is None:
        return None
    return f"{request.trace_id:032x}", f"{request.span_id:016x}"


def log_fields(**fields: Any) -> None:
    """Add ``fields`` to every log line written from here on in this request (or, outside
    requests, in this task)."""
    request = current_request()
    if request is not None:
        request.fields = {**(request.fields or {}), **fields}
    else:
        _fields.set({**_fields.get(), **fields})


#: The fields :func:`log_fields` set outside a request's whole context (what
#: :func:`extra_fields` gives while the request context is in its cheap form).
task_fields: Final = _fields.get


def extra_fields() -> Mapping[str, Any]:
    request = _current.get()
    if type(request) is RequestContext and request.fields:
        return {**_fields.get(), **request.fields}
    return _fields.get()
