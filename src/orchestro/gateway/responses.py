"""What a service returns, and how it becomes an HTTP answer.

A service returns a pydantic model or any JSON-able value (200, or the ``status`` its
decorator names), ``None`` (204), or a :class:`Response` when it chooses the status and
headers itself::

    @service.post("/orders")
    async def create(self, order: NewOrder) -> Response[Order]:
        saved = self.store.add(order)
        return Response(saved, status=201, headers={"Location": f"/orders/{saved.id}"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import pydantic_core
from aiohttp import web
from pydantic import TypeAdapter

from ..cell.spec import OperationSpec

__all__ = ["Response", "renderer"]

T = TypeVar("T")

_JSON = "application/json"


class Response(Generic[T]):
    """An answer with an explicit status, headers or media type.

    ``content`` is serialised like a plain return value (JSON), unless it is ``bytes`` or
    ``str``, which are sent as they are with ``media_type`` (default
    ``application/octet-stream`` and ``text/plain``).
    """

    __slots__ = ("content", "headers", "media_type", "status")

    def __init__(
        self,
        content: T | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        if not 100 <= status <= 599:
            raise ValueError(f"Response status must be 100-599, not {status}")
        self.content = content
        self.status = status
        self.headers = dict(headers or {})
        self.media_type = media_type

    def __repr__(self) -> str:
        return f"Response(status={self.status}, content={self.content!r})"


def renderer(op: OperationSpec) -> Callable[[Any], web.Response]:
    """Build, once per operation, the function that turns its return value into an answer."""
    dump: Callable[[Any], bytes]
    if op.returns is Any or op.returns_none:
        dump = pydantic_core.to_json
    else:
        adapter: TypeAdapter[Any] = TypeAdapter(op.returns)
        # The serializer itself: TypeAdapter.dump_json only passes it its default options,
        # and the wrapper costs twice the serialisation of a small model. (A deferred
        # build leaves a stand-in until first use: then the wrapper it is.)
        serializer = adapter.serializer
        if isinstance(serializer, pydantic_core.SchemaSerializer):
            dump = serializer.to_json
        else:
            dump = adapter.dump_json
    ok = op.service.status or 200
    empty = op.service.status or 204

    def render_response(result: Response[Any]) -> web.Response:
        content = result.content
        headers = dict(result.headers)
        if content is None:
            return web.Response(status=result.status, headers=headers)
        if isinstance(content, bytes | str):
            if result.media_type is None:
                media = "text/plain" if isinstance(content, str) else "application/octet-stream"
            else:
                media = result.media_type
            body = content.encode() if isinstance(content, str) else content
            headers.setdefault("Content-Type", media)
            return web.Response(status=result.status, body=body, headers=headers)
        headers.setdefault("Content-Type", result.media_type or _JSON)
        return web.Response(status=result.status, body=dump(content), headers=headers)

    def render(result: Any) -> web.Response:
        if isinstance(result, Response):
            return render_response(result)
        if result is None:
            return web.Response(status=empty)
        return web.Response(status=ok, body=dump(result), content_type=_JSON)

    return render
