"""The gateway's listener: bind, serve, and drain without dropping requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import json
import logging
import os
import resource
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.http import HttpProcessingError, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from ..config import GatewaySettings
from ..errors import HTTPError, StartupError
from .admission import UNPROCESSED_HEADER
from .pipeline import Pipeline
from .problem import PROBLEM_JSON, problem_response

__all__ = ["IngressLimits", "Listener", "ProblemServer", "default_max_connections"]

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
        self._deadline = deadline
        if self._ingress_timer is None:
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
                self._deadline = self._loop.time() + limits.body_timeout
                if self._ingress_timer is None:
                    self._arm(self._deadline)
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
    inner = server.inner if isinstance(server, ProblemServer) else None
    return inner if isinstance(inner, Pipeline) else None


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

    def __init__(self, handler: Any, *, limits: IngressLimits | None = None, **kwargs: Any) -> None:
        super().__init__(self._closing_when_draining, **kwargs)
        self.inner = handler  # the pipeline: what answers requests once parsed
        self.draining = False
        self.limits = limits

    async def _closing_when_draining(self, request: web.BaseRequest) -> web.StreamResponse:
        response: web.StreamResponse = await self.inner(request)
        if self.draining or response.status == 408:
            # Draining; or a 408 (a body too slow, RFC 9110 §15.5.9): Connection: close.
            response.force_close()  # the header when not yet sent; the close in any case
        return response

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


# After the drain deadline cancels the requests left, the most they get to unwind.
_UNWIND = 0.5
# How long a drain keeps idle keep-alive connections open for a request already on its way
# (answered with Connection: close) before it closes them.
IDLE_GRACE = 0.5
# The most a TLS handshake may take on the mesh listener: Go's net/http figure
# (TLSHandshakeTimeout, 10 s); asyncio's default is 60 s.
TLS_HANDSHAKE_TIMEOUT = 10.0


class Listener:
    """Serves one aiohttp low-level server on one TCP address.

    ``drain`` closes the listening socket first (new connections are refused), marks every
    answer from then on ``Connection: close``, closes idle keep-alive connections (after
    ``IDLE_GRACE``, for a request already on its way), lets requests in flight finish for up
    to ``drain_timeout`` seconds (that long, not twice), then cancels what is left.
    """

    def __init__(self, server: web.Server, *, drain_timeout: float) -> None:
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=drain_timeout
        )
        self._drain_timeout = drain_timeout
        self._started = False
        self._shared: web.SockSite | None = None
        self._tls: asyncio.Server | None = None  # the mesh listener's (see start)
        self.port = 0

    async def start(
        self, host: str, port: int, *, cell: str, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Start listening (over TLS with ``ssl_context``); returns the bound port (useful
        when ``port`` is 0)."""
        await self._runner.setup()
        try:
            if ssl_context is None:
                site = web.TCPSite(self._runner, host, port)
                await site.start()
                self.port = int(self._runner.addresses[0][1])
            else:
                # Served by a server of our own rather than a TCPSite, for its handshake
                # deadline: asyncio's default is 60 s, which lets anyone who can reach the
                # port hold a socket that long without saying a word of TLS (uncounted: the
                # connection limits start once the handshake is done).
                assert self._runner.server is not None
                self._tls = await asyncio.get_running_loop().create_server(
                    self._runner.server,
                    host,
                    port,
                    ssl=ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                    reuse_address=True,
                )
                self.port = int(self._tls.sockets[0].getsockname()[1])
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(_bind_error(exc, host, port, cell)) from exc
        self._started = True
        return self.port

    async def share(self, shared: socket.socket) -> None:
        """Also accept from ``shared``, a listening socket this process shares with the other
        replicas of its cell (inherited from the controller). Called once the cell is ready:
        a replica takes external traffic only then. Closing this process's copy on drain
        leaves the connections queued on it to the other replicas."""
        self._shared = web.SockSite(self._runner, shared)
        await self._shared.start()

    async def unshare(self) -> None:
        """Stop accepting from the shared socket: new connections go to the other replicas
        (connections already accepted here carry on)."""
        if self._shared is not None:
            site, self._shared = self._shared, None
            await site.stop()

    async def drain(self, within: float | None = None) -> None:
        """Stop accepting, finish requests in flight for up to ``within`` seconds (default:
        the drain timeout), cancel the rest, close. Idempotent."""
        if not self._started:
            return
        self._started = False
        budget = self._drain_timeout if within is None else max(0.0, within)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        server = self._runner.server
        self._shared = None
        if self._tls is not None:
            self._tls.close()  # no new connections; the open ones are the server's below
        for site in list(self._runner.sites):
            await site.stop()  # new connections are refused (the shared queue stays)
        if isinstance(server, ProblemServer):
            server.draining = True
        if server is not None:
            # First, every answer says Connection: close and its connection closes after it:
            # a client sending on its keep-alive connection right now is answered, not reset.
            # Connections still idle after IDLE_GRACE close then (busy ones after their
            # answer): closing an idle one at once would fail a request already on the wire.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(deadline, loop.time() + IDLE_GRACE)):
                    while server.connections:  # noqa: ASYNC110 (no event to wait on)
                        await asyncio.sleep(0.02)
            server.pre_shutdown()
            # aiohttp's own shutdown waits its timeout for handlers, then as long again
            # before it cancels them: wait here instead, once, then let it cancel at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while any(_busy(c) for c in server.connections):  # noqa: ASYNC110 (no event to wait on)
                        await asyncio.sleep(0.02)
            try:
                async with asyncio.timeout(_UNWIND):
                    await server.shutdown(0.01)  # cancels what is left (0 means "no bound")
            except TimeoutError:
                _log.warning("listener on port %d: requests did not unwind in time", self.port)
        try:
            async with asyncio.timeout(_UNWIND):
                await self._runner.cleanup()
        except TimeoutError:
            _log.warning("listener on port %d did not close in time", self.port)


def _busy(connection: RequestHandler) -> bool:
    """A request is being handled on ``connection`` (aiohttp keeps no public flag for it)."""
    return bool(getattr(connection, "_request_in_progress", False))


def _bind_error(exc: OSError, host: str, port: int, cell: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot start cell {cell!r}: port {port} on {host} is in use; stop the process "
            "using it, or choose another port with --port or @cell(port=...) (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot start cell {cell!r}: no permission to listen on port {port}; use a port "
            "above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot start cell {cell!r}: address {host} is not on this machine; use --host "
            "127.0.0.1 or 0.0.0.0"
        )
    return f"cannot start cell {cell!r} on {host}:{port}: {exc.strerror or exc}"
