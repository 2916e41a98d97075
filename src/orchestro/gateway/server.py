"""The gateway's listener: bind, serve, and drain without dropping requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..errors import StartupError
from .handshakes import HandshakeLimit, TLSAcceptor
from .ingress import ProblemServer

__all__ = ["Listener"]

_log = logging.getLogger("orchestro.gateway")


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

    def __init__(
        self, server: web.Server, *, drain_timeout: float, max_tls_handshakes: int = 256
    ) -> None:
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=drain_timeout
        )
        self._drain_timeout = drain_timeout
        self._started = False
        self._shared: web.SockSite | None = None
        self._tls: TLSAcceptor | None = None  # the mesh listener's (see start)
        self.handshakes = HandshakeLimit(max_tls_handshakes)
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
                # Accepted by our own acceptor rather than a TCPSite, for its handshakes
                # (gateway/handshakes.py): a deadline (asyncio's default is 60 s, which lets
                # anyone who can reach the port hold a socket that long without saying a
                # word of TLS) and a bound on how many run at once (the connection limits
                # start once a handshake is done).
                server = self._runner.server
                assert server is not None
                self._tls = TLSAcceptor(
                    await _listening_socket(host, port),
                    server,
                    ssl_context,
                    self.handshakes,
                    TLS_HANDSHAKE_TIMEOUT,
                )
                self.port = self._tls.port
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
            await self._tls.close()  # no new connections; the open ones are the server's below
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


async def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host`` (its first address) and ``port``, as the loop's
    ``create_server`` would make it (address reuse, the default backlog)."""
    found = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = found[0]
    return socket.create_server(address[:2], family=family, backlog=100)


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
