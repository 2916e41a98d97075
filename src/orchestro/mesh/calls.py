"""What stubs and raw clients call: the mesh as they see it (:class:`~.core.Mesh` is one),
so that they need not import the mesh that builds them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, overload

from .policy import CallPolicy
from .transports.base import CallRequest, CallResponse

__all__ = ["Calls"]

T = TypeVar("T")


class Calls(Protocol):
    def policy_for(self, cell: str, operation: str | None = None) -> CallPolicy: ...

    def local_host(self, cell: str) -> Any: ...

    def call_local(
        self,
        cell: str,
        host: Any,
        operation: str,
        arguments: dict[str, Any],
        seconds: float,
        decode: Callable[[Any], Any] | None = None,
        method: str = "POST",
        policy: CallPolicy | None = None,
        elsewhere: Callable[[Mapping[str, Any]], Awaitable[Any]] | None = None,
        bound: Mapping[str, Any] | None = None,
    ) -> Awaitable[Any]: ...

    @overload
    def call(
        self, cell: str, request: CallRequest, policy: CallPolicy | None = None
    ) -> Awaitable[CallResponse]: ...

    @overload
    def call(
        self,
        cell: str,
        request: CallRequest,
        policy: CallPolicy | None,
        decode: Callable[[CallResponse], T],
    ) -> Awaitable[T]: ...
