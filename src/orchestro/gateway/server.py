"""The gateway's listener: bind, serve, and drain without dropping requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..errors import HTTPError, StartupError
from .pipeline import Pipeline
from .problem import problem_response

__all__ = ["Listener", "ProblemServer"]

_log = logging.getLogger("orchestro.gateway")


class _ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors (a malformed request line or
    header, which never reaches the pipeline) as problem+json too."""

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
            server = self._manager
            pipeline = server.inner if isinstance(server, ProblemServer) else None
            if isinstance(pipeline, Pipeline):
                pipeline.malformed.seen(status, request.remote, detail or status)
        rid = os.urandom(12).hex()
        response = problem_response(
            HTTPError(status, detail), request_id=rid, headers={"x-request-id": rid}
        )
        response.force_close()
        return response


class ProblemServer(web.Server):
    """aiohttp's low-level server whose own error answers are problem+json.

    Once ``draining`` is set, every answer carries ``Connection: close`` and its connection
    closes after it: a keep-alive client learns to open a new connection (to another
    replica) instead of sending its next request down a connection about to close.
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(self._closing_when_draining, **kwargs)
        self.inner = handler  # the pipeline: what answers requests once parsed
        self.draining = False

    async def _closing_when_draining(self, request: web.BaseRequest) -> web.StreamResponse:
        response: web.StreamResponse = await self.inner(request)
        if self.draining:
            response.force_close()  # the header when not yet sent; the close in any case
        return response

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


# After the drain deadline cancels the requests left, the most they get to unwind.
_UNWIND = 0.5
# How long a drain keeps idle keep-alive connections open for a request already on its way
# (answered with Connection: close) before it closes them.
IDLE_GRACE = 0.5


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
        self.port = 0

    async def start(
        self, host: str, port: int, *, cell: str, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Start listening (over TLS with ``ssl_context``); returns the bound port (useful
        when ``port`` is 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(_bind_error(exc, host, port, cell)) from exc
        self._started = True
        self.port = int(self._runner.addresses[0][1])
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
