"""Access lines: the gateway's JSON line per request, made without ``logging``.

When the access log goes only to orchestro's own JSON handler (the default outside a
terminal; :func:`fast_access_writer` checks), the gateway puts an entry per request into the
handler's buffer (see :class:`~.buffer.BufferedHandler`) and the writer thread makes the line of
it with :class:`AccessLines`, in its batch: what :class:`~.logs.JsonFormatter` would write for
the access record, many lines in a row, with the caches warm.

The lines are made in C where the optional extension ``_lines`` is built (:data:`EXTENSION`;
``_lines.c``), and in Python where it is not, or when ``ORCHESTRO_NO_EXTENSIONS`` is set: the
same lines, the Python one slower (see ``docs/architecture.md``, "The access line in C").
"""

from __future__ import annotations

import json
import logging
import os
from json.encoder import encode_basestring
from typing import Any, Final

from yarl import URL

from .buffer import BufferedHandler
from .logs import ContextFilter, JsonFormatter, iso_time

__all__ = [
    "EXTENSION",
    "AccessLines",
    "client_address",
    "fast_access_writer",
    "fields_text",
    "url_path",
]

_Lines: Any
try:
    from ._lines import Lines as _Lines
except ImportError:  # not built: no compiler where orchestro was installed
    _Lines = None
if os.environ.get("ORCHESTRO_NO_EXTENSIONS"):
    _Lines = None
EXTENSION: Final = _Lines is not None  # access lines are made in C

_THOUSANDTHS: Final = tuple(f"{i:03d}" for i in range(1000))


def _json_text(text: str) -> str:
    """``text`` as a JSON string, cheaply for printable text (a request id, an address), where
    only quotes and backslashes would need escaping, and rarely do."""
    if '"' in text or "\\" in text or not text.isprintable():
        return encode_basestring(text)
    return f'"{text}"'


def url_path(target: str) -> str:
    """The path of a request target, decoded: what aiohttp's ``request.path`` gives (its C
    parser cuts the origin form at the first ``?``, or at ``#`` when there is none)."""
    if target[:1] == "/":
        query = target.find("?")
        path = target[:query] if query >= 0 else target.partition("#")[0]
        return URL.build(path=path, encoded=True).path if "%" in path else path
    if target == "*":
        return "*"  # OPTIONS *
    if "://" not in target:
        return ""  # the authority form of CONNECT: host:port, no path
    return URL(target, encoded=True).relative().path  # the absolute form


class AccessLines:
    """The JSON access lines of one route: what :class:`JsonFormatter` would write for the
    gateway's access record, made in one f-string (a few µs instead of ~40-60 through
    ``logging``), the route's constant parts encoded once.

    The gateway puts an entry per request: ``(lines.make, created, trace_id, span_id,
    request_id, method, target, status, elapsed, agent, client, extra)`` — the trace and span
    ids as integers (or None), ``target`` the request target as sent, ``client`` the
    connection's peer address as aiohttp keeps it (its ``peername``: a tuple whose first item
    is the address, a str, or None; :func:`client_address` makes ``request.remote`` of it on
    the writer thread, where the request paid ~3k instructions for it), ``extra`` the request's
    log fields already made into text by :func:`fields_text` (user values are turned into text
    where they were set, not on the writer thread). The writer thread calls :meth:`make` on
    it. The method is one aiohttp's parser accepted (a token: nothing to escape).
    """

    __slots__ = ("_agent", "_client", "_head", "_route", "_stamp", "make")

    def __init__(self, cell: str, instance: str, route: str) -> None:
        cell, instance = encode_basestring(cell), encode_basestring(instance)
        self._head = f', "cell": {cell}, "instance": {instance}'
        self._route = encode_basestring(route)
        # The last of each, made into JSON text: a connection's address is one object for
        # all its requests; a client sends one agent in a row; a batch's lines share their
        # milliseconds.
        self._client: tuple[object, str] = (None, "null")
        self._agent: tuple[str, str] = ("", "")  # (agent, its text inside JSON quotes)
        self._stamp: tuple[int | None, str] = (None, "")  # None: no line made yet
        # One bound method, not one per entry: the C maker's, which hands _make what it
        # does not make itself (text that is not ASCII, a value of an unexpected type).
        self.make = (
            self._make
            if _Lines is None
            # url_path is called to decode a path with a percent escape; the C maker cuts a
            # path at its query itself, as url_path does.
            else _Lines(self._head, self._route, self._make, iso_time, url_path).make
        )

    def _make(self, entry: tuple[Any, ...]) -> str:
        """The line of one entry (see the class's docstring)."""
        (
            _,
            created,
            trace_id,
            span_id,
            request_id,
            method,
            target,
            status,
            elapsed,
            agent,
            client,
            extra,
        ) = entry
        milli = int(created * 1000)
        stamp = self._stamp
        if stamp[0] != milli:
            stamp = self._stamp = (milli, iso_time(created))  # a call less while it repeats
        micros = int(elapsed * 1e6 + 0.5)
        duration = f"{micros // 1000}.{_THOUSANDTHS[micros % 1000]}"
        if trace_id is None:
            trace = ""
        elif span_id is None:
            trace = f', "trace_id": "{trace_id:032x}"'
        else:
            trace = f', "trace_id": "{trace_id:032x}", "span_id": "{span_id:016x}"'
        # _json_text's check, inline: a call less on every line.
        if request_id is None:
            rid = ""
        elif '"' in request_id or "\\" in request_id or not request_id.isprintable():
            rid = f', "request_id": {encode_basestring(request_id)}'
        else:
            rid = f', "request_id": "{request_id}"'
        seen = self._client
        if client is not seen[0]:
            address = client_address(client)
            seen = self._client = (client, "null" if address is None else _json_text(address))
        said = self._agent
        if agent != said[0]:
            said = self._agent = (agent, encode_basestring(agent)[1:-1])
        # The target as JSON, and url.path: the same text for the common origin form.
        quoted = encode_basestring(target)
        if target[:1] == "/" and "%" not in target and "?" not in target and "#" not in target:
            path = quoted
        else:
            path = encode_basestring(url_path(target))
        # The message's escapes are its parts' (JSON escapes character by character).
        return (
            f'{{"time": "{stamp[1]}", "level": "info", "logger": "orchestro.access", '
            f'"message": "{method} {quoted[1:-1]} {status} {duration}ms \\"{said[1]}\\""'
            f"{self._head}{trace}{rid}, "
            f'"http.request.method": "{method}", '
            f'"url.path": {path}, "http.route": {self._route}, '
            f'"http.response.status_code": {status}, '
            f'"duration_ms": {duration}, '
            f'"client.address": {seen[1]}{extra}}}'
        )


def client_address(peer: object) -> str | None:
    """The client's address of a connection's peername, as aiohttp's ``request.remote`` gives
    it (an IP address's text, a Unix socket's path, or None)."""
    if peer is None:
        return None
    if isinstance(peer, list | tuple):
        return str(peer[0])
    return str(peer)


def fields_text(fields: Any) -> str:
    """A request's log fields as the tail of a JSON access line (``, "key": value ...``)."""
    return "".join(
        f", {encode_basestring(k)}: {json.dumps(v, default=str, ensure_ascii=False)}"
        for k, v in fields.items()
    )


def fast_access_writer() -> Any:
    """The :meth:`BufferedHandler.put` to write access lines to directly, when the access
    log goes only to orchestro's own JSON handler at INFO (else None: log through
    ``logging``, which honours whatever handlers and filters the application set)."""
    access = logging.getLogger("orchestro.access")
    root = logging.getLogger()
    if access.handlers or access.filters or not access.propagate or root.filters:
        return None
    if access.level not in (logging.NOTSET, logging.DEBUG, logging.INFO):
        return None
    if len(root.handlers) != 1:
        return None
    (handler,) = root.handlers
    if (
        type(handler) is not BufferedHandler
        or type(handler.formatter) is not JsonFormatter
        or handler.level > logging.INFO
        or any(type(f) is not ContextFilter for f in handler.filters)
    ):
        return None
    return handler.put
