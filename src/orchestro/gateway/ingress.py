"""Ingress limits: what a client the gateway cannot trust may hold of it.

A :class:`ProblemServer` is aiohttp's low-level server whose connections enforce a header
and a body read timeout, a cap on open connections, and header size and count limits, each
answered with problem+json and the right status (408, 503, 431) or a close; the HTTP
parser's own refusals (400) become problem+json too, counted and logged at most a few lines
a minute (see ``docs/concepts/edge.md``).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.http import HttpProcessingError, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from ..config import GatewaySettings
from ..errors import HTTPError
from .admission import UNPROCESSED_HEADER
from .pipeline import Pipeline
from .problem import PROBLEM_JSON, problem_response

__all__ = ["IngressLimits", "ProblemServer", "default_max_connections"]

_log = logging.getLogger("orchestro.gateway")


@dataclass(frozen=True, slots=True)
class IngressLimits:
    """What one client connection may hold (the ``GatewaySettings`` ingress fields; see
    ``docs/concepts/edge.md``): enforced by the connection handler, before the pipeline."""

    header_timeout: float = 20.0
    body_timeout: float = 20.0
    min_body_rate: int = 500
    max_header_size: int = 32 * 1024
    max_connections: int = 10_000

    @classmethod
    def of(cls, settings: GatewaySettings) -> IngressLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            min_body_rate=settings.min_body_rate,
            max_header_size=int(settings.max_header_size),
            max_connections=settings.max_connections or default_max_connections(),
        )


def default_max_connections() -> int:
    """90% of this process's open-file limit: the rest is kept for sockets to other cells,
    the registry and files, so that accept() never fails with EMFILE."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - no rlimits on this platform
        return 10_000
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft * 9 // 10)


class _Phase(enum.Enum):
    HEAD = "head"  # waiting for a request's line and headers (header_timeout)
    BODY = "body"  # its body is arriving (body_timeout + bytes / min_body_rate)
    DONE = "done"  # its body is in; the next bytes start the next request's head


_TOO_LARGE: Final = ("Got more than", "Too many headers")
_LINGER: Final = 1.0  # seconds a refused connection stays half-open for its answer to land


class _ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors (a malformed request line or
    header, which never reaches the pipeline) as problem+json too, and enforcing the
    :class:`IngressLimits`: a request's head must arrive whole within ``header_timeout``
    and be at most ``max_header_size`` bytes; its body must keep arriving (``body_timeout``
    plus a second per ``min_body_rate`` bytes). One timer per connection, re-armed only when
    it fires early: no per-chunk timer churn."""

    __slots__ = ("_deadline", "_head_bytes", "_ingress", "_ingress_timer", "_payload", "_phase")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._ingress: IngressLimits | None = (
            manager.limits if isinstance(manager, ProblemServer) else None
        )
        self._phase = _Phase.HEAD
        self._deadline = 0.0
        self._head_bytes = 0
        self._payload: Any = None
        self._ingress_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # the server may refuse it (max_connections)
        limits = self._ingress
        if limits is not None and self.transport is not None and not self._force_close:
            # From connecting, like nginx's client_header_timeout: a socket that sends nothing
            # is closed too.
            self._start_head(limits)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._ingress_timer is not None:
            self._ingress_timer.cancel()
            self._ingress_timer = None
        self._payload = None
        super().connection_lost(exc)

    def _start_head(self, limits: IngressLimits) -> None:
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._arm(self._loop.time() + limits.header_timeout)

    def _arm(self, deadline: float) -> None:
        """Time out at ``deadline``: the timer is moved earlier if it is set later (a body
        timeout shorter than what was left of the header timeout); a later deadline is
        met by the timer re-arming itself when it fires early."""
        self._deadline = deadline
        timer = self._ingress_timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._ingress_timer = self._loop.call_at(deadline, self._on_timer)

    def data_received(self, data: bytes) -> None:
        limits = self._ingress
        if limits is None or self._force_close:
            super().data_received(data)  # (which ignores data once closing)
            return
        phase = self._phase
        if phase is _Phase.DONE and data:
            self._start_head(limits)
            phase = _Phase.HEAD
        if phase is _Phase.HEAD:
            self._head_bytes += len(data)
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            # A request's head was parsed (this chunk may also hold its body, or more).
            if self._head_bytes > limits.max_header_size:
                # The head ended in this chunk, so the check below never saw it incomplete:
                # measure the heads just parsed (only here, where the bytes read say one
                # may be too large, so a normal request pays nothing).
                self._refuse_large_heads(self._request_count - count, limits.max_header_size)
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._phase = _Phase.BODY
                self._payload = payload
                self._arm(self._loop.time() + limits.body_timeout)
            else:
                self._phase = _Phase.DONE
        elif phase is _Phase.HEAD:
            if self._head_bytes > limits.max_header_size and self.transport is not None:
                self.refuse(
                    HTTPError(
                        431,
                        f"the request line and headers exceed {limits.max_header_size} bytes",
                    )
                )
        elif phase is _Phase.BODY:
            payload = self._payload
            if payload is None or payload.is_eof():
                self._phase = _Phase.DONE
                self._payload = None
            else:
                self._deadline += len(data) / limits.min_body_rate

    def _refuse_large_heads(self, parsed: int, limit: int) -> None:
        messages = self._messages
        first = len(messages) - parsed
        for index in range(max(0, first), len(messages)):
            message = messages[index][0]
            if not isinstance(message, RawRequestMessage):
                continue
            size = len(message.method) + len(message.path) + 13  # "M P HTTP/1.1\r\n" + "\r\n"
            size += sum(len(name) + len(value) + 4 for name, value in message.raw_headers)
            if size > limit:
                # aiohttp's own form of a request its parser refused: the handler answers
                # it through handle_error (431 problem+json, then close) and serves none
                # of it; what was pipelined after it is dropped.
                detail = f"the request line and headers exceed {limit} bytes"
                messages[index] = (
                    _ErrInfo(status=431, exc=HttpProcessingError(message=detail), message=detail),
                    EMPTY_PAYLOAD,
                )
                while len(messages) > index + 1:
                    messages.pop()
                return

    def _on_timer(self) -> None:
        self._ingress_timer = None
        limits = self._ingress
        if limits is None or self.transport is None or self._force_close:
            return
        if self._phase is _Phase.DONE:
            return
        now = self._loop.time()
        if now < self._deadline:
            self._ingress_timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        if self._phase is _Phase.HEAD:
            if self._request_in_progress:
                # Our own answer is slow, not the client: its next head waits for it.
                self._arm(now + limits.header_timeout)
                return
            self._note(408, "header timeout")
            if self._head_bytes == 0:
                self.force_close()  # never sent a byte: nothing to answer
                return
            self.refuse(
                HTTPError(
                    408,
                    f"the request's headers did not arrive within {limits.header_timeout:g} s",
                ),
                count=False,
            )
            return
        payload = self._payload
        self._phase = _Phase.DONE
        self._payload = None
        if payload is None or payload.is_eof():
            return
        self._note(408, "body timeout")
        if self._request_in_progress:
            # The service is waiting for the body: its read raises, the pipeline answers 408,
            # and the connection closes after it (no lingering read of what is left).
            self._lingering_time = 0.0
            payload.set_exception(
                HTTPError(
                    408,
                    f"the request's body did not arrive within {limits.body_timeout:g} s "
                    f"(plus 1 s per {limits.min_body_rate} bytes)",
                )
            )
        else:
            self.force_close()  # answered already: stop reading what is left

    def _note(self, status: int, reason: str) -> None:
        pipeline = _pipeline_of(self._manager)
        if pipeline is not None:
            pipeline.malformed.seen(status, _peer(self), reason)

    def refuse(self, error: HTTPError, *, count: bool = True) -> None:
        """Answer ``error`` as problem+json straight on the socket and close (outside any
        request: nothing of it reached the pipeline)."""
        transport = self.transport
        if transport is None:
            return
        if count:
            self._note(error.status, error.detail or str(error.status))
        body = json.dumps(error.to_problem()).encode()
        phrase = HTTPStatus(error.status).phrase
        extra = "".join(f"{k}: {v}\r\n" for k, v in error.headers.items())
        head = (
            f"HTTP/1.1 {error.status} {phrase}\r\nContent-Type: {PROBLEM_JSON}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
        )
        transport.write(head.encode("latin-1") + body)
        self._close_softly(transport)

    def _close_softly(self, transport: asyncio.Transport) -> None:
        """Stop reading requests, send FIN after the answer, close a moment later: closing
        at once, with the client's bytes still unread, would send a reset that can destroy
        the answer before the client reads it (nginx's lingering close, in short)."""
        self._force_close = True  # aiohttp's own flag: no more data is parsed or served
        if self._waiter is not None:
            self._waiter.cancel()
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(_LINGER, transport.close)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        detail: str | None
        if status >= 500:
            # Something failed outside the pipeline (which answers its own errors): a bug,
            # logged with its traceback by aiohttp.
            super().handle_error(request, status, exc, message)  # refuses a started answer
            detail = "the server failed while handling the request"
        else:
            # The parser refused the request: the client's doing, at will. One line,
            # rate-limited, and a count (no traceback: it was a log-flooding vector).
            if request.writer.output_size > 0:
                raise ConnectionError("the answer was started: cannot send an error instead")
            detail = message or (str(exc) if exc else None)
            if status == 400 and detail is not None and detail.startswith(_TOO_LARGE):
                # A header line over 8190 bytes, or more than max_header_count headers.
                status = 431
            pipeline = _pipeline_of(self._manager)
            if pipeline is not None:
                pipeline.malformed.seen(status, request.remote, detail or status)
        rid = os.urandom(12).hex()
        response = problem_response(
            HTTPError(status, detail), request_id=rid, headers={"x-request-id": rid}
        )
        response.force_close()
        return response


def _pipeline_of(server: web.Server | None) -> Pipeline | None:
    return server.inner if isinstance(server, ProblemServer) else None


def _peer(handler: RequestHandler) -> str | None:
    transport = handler.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) else None


class ProblemServer(web.Server):
    """aiohttp's low-level server whose own error answers are problem+json, and which
    enforces the :class:`IngressLimits` (``limits``; ``None``: aiohttp's own only).

    Once ``draining`` is set, every answer carries ``Connection: close`` and its connection
    closes after it: a keep-alive client learns to open a new connection (to another
    replica) instead of sending its next request down a connection about to close.
    """

    def __init__(
        self, handler: Pipeline, *, limits: IngressLimits | None = None, **kwargs: Any
    ) -> None:
        # The pipeline is aiohttp's handler itself, with no coroutine of ours around each
        # request (one cost ~0.8 µs a request): it closes the connections while draining.
        super().__init__(handler, **kwargs)
        self.inner = handler  # the pipeline: what answers requests once parsed
        self.limits = limits

    @property
    def draining(self) -> bool:
        return self.inner.closing

    @draining.setter
    def draining(self, value: bool) -> None:
        self.inner.closing = value

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        limits = self.limits
        if (
            limits is not None
            and len(self._connections) > limits.max_connections
            and isinstance(handler, _ProblemRequestHandler)
        ):
            handler.refuse(
                HTTPError(
                    503,
                    f"the gateway holds its limit of {limits.max_connections} open connections",
                    headers={"Retry-After": "1", UNPROCESSED_HEADER: "busy"},
                )
            )
