"""TLS handshakes with a bound: at most so many at once on a listener, each within a deadline.

asyncio (and aiohttp over it) counts a TLS connection only once its handshake is done, so
the connection limits cannot see a peer that opens sockets and never finishes one; and each
handshake holds a read buffer of its own (256 KiB on the asyncio loop: 1,000 half-open
handshakes held 310 MB of a cell). A :class:`TLSAcceptor` accepts the TCP connections itself,
closes one at once when :attr:`HandshakeLimit.limit` handshakes are already under way, and
otherwise hands the socket to the loop's TLS (``connect_accepted_socket``, with the deadline):
the server's protocol gets the connection once the handshake is done, as with
``create_server(ssl=...)``, and no byte can reach anything but the TLS layer before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable

from ..observability.logs import RateLimitFilter

__all__ = ["HandshakeLimit", "TLSAcceptor"]

# Its lines are ones a peer can cause at will: two a minute at most (the next one says how
# many were left out).
_log = logging.getLogger("orchestro.gateway.tls")
_log.addFilter(RateLimitFilter(burst=2, interval=60.0))
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class HandshakeLimit:
    """The handshakes under way on one listener, and those refused for being over ``limit``."""

    __slots__ = ("active", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refused = 0

    def refuse(self, port: int) -> None:
        self.refused += 1
        _log.warning(
            "listener on port %d: %d TLS handshakes under way, the most allowed "
            "(max_tls_handshakes); new connections are closed until one finishes (%d so far)",
            port,
            self.limit,
            self.refused,
        )


class TLSAcceptor:
    """Accepts on ``sock`` and serves each connection over TLS with ``factory``'s protocol."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        limit: HandshakeLimit,
        timeout: float,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self._factory = factory
        self._context = context
        self._limit = limit
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accepting = self._loop.create_task(self._accept())

    async def _accept(self) -> None:
        loop, limit = self._loop, self._limit
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self.sock.fileno() < 0:
                    return  # closed by close()
                # Out of file descriptors, or a connection reset while queued: go on.
                _log.warning("listener on port %d: accept failed: %s", self.port, exc)
                await asyncio.sleep(0.1)
                continue
            if limit.active >= limit.limit:
                limit.refuse(self.port)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()  # a reset, at once: nothing of it is read
                continue
            limit.active += 1
            task = loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context, ssl_handshake_timeout=self._timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            conn.close()  # a failed or abandoned handshake: nothing to answer
        finally:
            self._limit.active -= 1

    async def close(self) -> None:
        """Stop accepting (new connections are refused) and abandon handshakes under way;
        connections already handed to the server are the server's to close."""
        self._accepting.cancel()
        for task in list(self._handshakes):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        self.sock.close()
