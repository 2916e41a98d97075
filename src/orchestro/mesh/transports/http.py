"""HTTP transport: one shared keep-alive ``aiohttp.ClientSession`` per process (per calling
cell, with mutual TLS), bounded pools.

With ``tls`` (the calling cell's :class:`~orchestro.security.tls.CellTLS`), an instance that
has a mesh listener is called there, over ``https``, presenting the caller's certificate and
verifying the callee's name ``<cell>.cell.<trust-domain>``; connections are pooled and kept
alive like plain ones, so a handshake is paid once per pooled connection.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from ...errors import DeadlineExceeded, TransportError
from ...registry.base import Instance
from ...timer import DeadlineTimer, timer_for
from .base import CallRequest, CallResponse

if TYPE_CHECKING:
    from ...security.tls import CellTLS

__all__ = ["HttpTransport"]

# How aiohttp (3.9 to 3.14 at least) reports a request whose body could not be written
# because the connection was closed: it sends the buffered headers with the body, so the
# server got nothing, or an incomplete request.
_UNWRITTEN = "Can not write request body"


class HttpTransport:
    def __init__(
        self,
        *,
        limit: int = 1000,
        limit_per_host: int = 100,
        connect_timeout: float = 1.0,
        tls: CellTLS | None = None,
    ) -> None:
        self.tls = tls
        self._limit = limit
        # Only the socket connect is timed by aiohttp (a timer per new connection, none per
        # request): a SYN into a partition is otherwise retried by the kernel for minutes,
        # and a connect that timed out sent nothing, so any method may be sent again.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=connect_timeout
        )
        self._connect_timeout = connect_timeout
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        # (id(instance), path) -> (instance, parsed URL). Keyed by identity: the registry view
        # replaces instances, never mutates them, and hashing one (a pydantic model) or
        # formatting its URL would cost microseconds a call.
        self._urls: dict[tuple[int, str], tuple[Instance, URL]] = {}
        self._timer: DeadlineTimer | None = None  # the session's loop's

    def with_tls(self, tls: CellTLS) -> HttpTransport:
        """A transport like this one whose connections to mesh listeners present ``tls``'s
        client certificate (its own connection pool: a pool holds one identity)."""
        return HttpTransport(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            connect_timeout=self._connect_timeout,
            tls=tls,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit, limit_per_host=self._limit_per_host
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # calls between services keep no cookies
                # Decompressed here only when a response is compressed (cells never are).
                auto_decompress=False,
            )
            self._timer = timer_for(asyncio.get_running_loop())
        return self._session

    async def send(
        self,
        instance: Instance,
        request: CallRequest,
        seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> CallResponse:
        key = (id(instance), request.path)
        cached = self._urls.get(key)
        if cached is not None and cached[0] is instance:
            url = cached[1]
        else:
            if len(self._urls) > 10_000:  # paths with ids in them: keep the cache bounded
                self._urls.clear()
            base = instance.url
            if self.tls is not None and instance.mesh_port:
                base = instance.mesh_url or base
            url = URL(base).with_path(request.path, encoded=True)
            self._urls[key] = (instance, url)
        if request.query:
            url = url.with_query(list(request.query))
        session = self._session or self._client()
        tls = self.tls
        secure: dict[str, Any] = {}
        if tls is not None and instance.mesh_port:
            # Read per request: a removed root replaces the context (no connection it
            # verified is reused). The name checked is the callee cell's DNS SAN.
            secure = {"ssl": tls.client, "server_hostname": tls.server_name(instance.cell)}
        timer = self._timer
        assert timer is not None
        task = asyncio.current_task()
        assert task is not None
        # The deadline is the loop's deadline timer's, not aiohttp's: a ClientTimeout's
        # timer per request costs this method's own cost again (see orchestro.timer).
        expiry = timer.start(time.monotonic() + seconds, task)
        try:
            # Awaited and released by hand rather than through ``async with``: the same
            # steps, without the four coroutines the context managers add to every call.
            response = await session.request(
                request.method,
                url,
                data=request.body,
                headers=request.headers if headers is None else headers,
                timeout=self._timeout,
                allow_redirects=False,
                **secure,
            )
            try:
                body = await response.read()
            finally:
                response.release()
            encoding = response.headers.get("Content-Encoding")
            if encoding is not None and body:
                body = _decompress(body, encoding)
            return CallResponse(response.status, response.headers, body)
        except asyncio.CancelledError:
            if timer.expired(expiry):
                raise DeadlineExceeded(
                    f"{instance.url} did not answer within {seconds:.3f} s"
                ) from None
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportError(
                f"cannot connect to {instance.url}: no answer within the connect timeout of "
                f"{self._connect_timeout} s",
                connect=True,
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # Another trust domain, or a CA this cell's bundle does not hold: no retry will
            # change that, but another instance may hold a certificate of the right CA.
            raise TransportError(
                f"cannot call {instance.mesh_url or instance.url}: its certificate did not "
                f"verify ({exc.certificate_error}); the cells' identities must come from one "
                "CA (the trust domain's bundle): `python -m orchestro certs show CERT --cell "
                f"{instance.cell}` says why a certificate does not verify",
                connect=True,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # The address actually dialled: the mesh listener's when called over mutual TLS (a
            # refused handshake lands here, its reason in os_error).
            where = instance.mesh_url if secure else instance.url
            raise TransportError(
                f"cannot connect to {where}: {exc.os_error}", connect=True
            ) from exc
        except aiohttp.ClientOSError as exc:
            if _UNWRITTEN in str(exc):
                # A pooled connection the server closed (a drain closing idle keep-alive
                # connections) under the request: it was not written whole, so the callee
                # cannot have served it — as good as refused, safe to send again.
                raise TransportError(
                    f"{instance.url}: the connection closed before the request was sent",
                    connect=True,
                ) from exc
            raise TransportError(f"{instance.url}: {exc or type(exc).__name__}") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"{instance.url}: {exc or type(exc).__name__}") from exc
        finally:
            timer.stop(expiry)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.sleep(0)


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    return body  # identity, or an encoding left to the caller
