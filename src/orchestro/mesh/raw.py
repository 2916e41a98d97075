"""The raw client: calls to a cell, or to an external HTTP service, by method and path."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pydantic_core
from pydantic import TypeAdapter
from yarl import URL

from ..errors import CallError
from .calls import Calls
from .policy import CallPolicy
from .transports.base import CallRequest

__all__ = ["RawClient", "text"]

T = TypeVar("T")
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class RawClient:
    """Calls to a cell (or an external service) by path: ``get``, ``post``, ``put``, ...

    ```python
    orders = mesh.client("orders")
    order = await orders.get("/orders/7", response=Order)
    ```
    """

    def __init__(self, mesh: Calls, cell: str, policy: CallPolicy | None) -> None:
        self._mesh = mesh
        self.cell = cell
        self._policy = policy

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        response: type[T] | None = None,
        idempotent: bool | None = None,
        key: str | None = None,
        fallback: Callable[[CallError], Any] | None = None,
    ) -> Any:
        """Send one request; returns ``response``'s model, else the decoded JSON (or None).

        ``fallback``, if given, is called with the final error when the call fails, and its
        result (awaited if need be) is returned instead."""
        method = method.upper()
        all_headers = dict(headers or {})
        body = None
        if json is not None:
            body = pydantic_core.to_json(json)
            all_headers.setdefault("Content-Type", "application/json")
        query: list[tuple[str, str]] = []
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            for name, value in items:
                for item in value if isinstance(value, list | tuple) else [value]:
                    if item is not None:
                        query.append((name, text(item)))
        request = CallRequest(
            method=method,
            path=str(URL(path).raw_path) if "%" not in path else path,
            query=query,
            headers=all_headers,
            body=body,
            idempotent=(method in _IDEMPOTENT if idempotent is None else idempotent),
            key=key,
        )
        try:
            answer = await self._mesh.call(self.cell, request, self._policy)
        except CallError as exc:
            if fallback is None:
                raise
            value = fallback(exc)
            return await value if inspect.isawaitable(value) else value
        if answer.status == 204 or not answer.body:
            return None
        if response is not None:
            return TypeAdapter(response).validate_json(answer.body)
        return pydantic_core.from_json(answer.body)

    async def get(self, path: str, **options: Any) -> Any:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> Any:
        return await self.request("POST", path, **options)

    async def put(self, path: str, **options: Any) -> Any:
        return await self.request("PUT", path, **options)

    async def patch(self, path: str, **options: Any) -> Any:
        return await self.request("PATCH", path, **options)

    async def delete(self, path: str, **options: Any) -> Any:
        return await self.request("DELETE", path, **options)


def text(value: Any) -> str:
    """A path, query or header value as the callee's binder reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
