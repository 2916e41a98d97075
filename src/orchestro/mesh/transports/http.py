"""HTTP transport: one shared keep-alive ``aiohttp.ClientSession`` per process, bounded pools."""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from ...errors import DeadlineExceeded, TransportError
from ...registry.base import Instance
from .base import CallRequest, CallResponse

__all__ = ["HttpTransport"]


class HttpTransport:
    def __init__(self, *, limit: int = 1000, limit_per_host: int = 100) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[str, URL] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit, limit_per_host=self._limit_per_host
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # calls between services keep no cookies
            )
        return self._session

    async def send(self, instance: Instance, request: CallRequest, seconds: float) -> CallResponse:
        base = self._bases.get(instance.id)
        if base is None:
            base = self._bases[instance.id] = URL(instance.url)
        url = base.with_path(request.path, encoded=True)
        if request.query:
            url = url.with_query(list(request.query))
        try:
            async with self._client().request(
                request.method,
                url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return CallResponse(response.status, response.headers, body)
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"cannot connect to {instance.url}: {exc.os_error}", connect=True
            ) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(f"{instance.url}: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise DeadlineExceeded(f"{instance.url} did not answer within {seconds:.3f} s") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.sleep(0)
