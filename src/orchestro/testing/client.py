"""A test client that runs a cell's whole lifecycle in-process, over a real loopback socket."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
import pydantic_core
from multidict import CIMultiDictProxy

from ..config import AuthSettings, GatewaySettings
from ..host import CellHost
from ..mesh.core import Mesh
from ..security.identity import anonymous, fixed_identity

__all__ = ["CellClient", "TestResponse"]


class TestResponse:
    """A fully read response: ``status``, ``headers``, ``content``, ``text``, ``json()``."""

    __test__ = False  # not a pytest test class

    def __init__(self, status: int, headers: CIMultiDictProxy[str], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode()

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} {self.content[:80]!r}>"


class CellClient:
    """Start a cell (``on_start`` included) on a free loopback port, send it requests, and
    drain it (``on_stop`` included) on exit.

    Args:
        cell: a ``@cell`` class, or an instance from :func:`orchestro.testing.make_cell`.
        settings: gateway settings (body limit, concurrency limit, drain timeout).
        caller: play the part of this cell when calling (reaches ``internal`` services);
            anonymous by default.
        mesh: the :class:`~orchestro.Mesh` the cell's ``mesh.client`` attributes call through
            (with a :class:`FaultInjector` or :class:`MockTransport`, say).
        auth: how bearer tokens are checked (``[auth]``; default: from the environment).
    """

    __test__ = False

    def __init__(
        self,
        cell: type[Any] | object,
        *,
        settings: GatewaySettings | None = None,
        caller: str | None = None,
        mesh: Mesh | None = None,
        auth: AuthSettings | None = None,
    ) -> None:
        self.host = CellHost(
            cell,
            settings=settings,
            host="127.0.0.1",
            port=0,
            identity=fixed_identity(caller) if caller else anonymous,
            mesh=mesh,
            auth=auth,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self.host.url

    @property
    def instance(self) -> Any:
        return self.host.instance

    async def start(self) -> None:
        await self.host.start()
        self._session = aiohttp.ClientSession(base_url=self.host.url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.host.drain()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TestResponse:
        """Send one request. ``json`` may hold pydantic models; ``content`` is sent raw."""
        if self._session is None:
            raise RuntimeError("the client is not started: use `async with CellClient(...)`")
        all_headers = dict(headers or {})
        data: bytes | str | None = content
        if json is not None:
            data = pydantic_core.to_json(json)
            all_headers.setdefault("Content-Type", "application/json")
        query = None
        if params is not None:
            query = [
                (k, _query_value(item))
                for k, v in params.items()
                for item in (v if isinstance(v, list | tuple) else [v])
            ]
        async with self._session.request(
            method, path, params=query, data=data, headers=all_headers
        ) as response:
            body = await response.read()
            return TestResponse(response.status, response.headers, body)

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("DELETE", path, **kwargs)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
