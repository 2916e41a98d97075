"""The transport protocol: send one request to one instance, get its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ...registry.base import Instance

if TYPE_CHECKING:
    from ...security.tls import CellTLS

__all__ = ["CallRequest", "CallResponse", "Transport", "with_tls"]


# Not frozen: a frozen dataclass's __init__ costs four times as much, on every call. Treat
# both as immutable all the same: a stub may send one prepared request many times.
@dataclass(slots=True)
class CallRequest:
    method: str
    path: str  # percent-encoded, path parameters filled in
    query: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    idempotent: bool = True
    key: str | None = None  # for consistent hashing
    operation: str = ""  # the service's name, for typed calls


@dataclass(slots=True)
class CallResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def send(
        self,
        instance: Instance,
        request: CallRequest,
        seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> CallResponse:
        """Send ``request`` (with ``headers`` instead of its own when given: the mesh adds
        deadline and attempt headers); raise TransportError if the instance cannot be reached
        and DeadlineExceeded after ``seconds``."""
        ...

    async def aclose(self) -> None: ...


def with_tls(transport: Transport, tls: CellTLS) -> Transport:
    """``transport`` for a cell that proves itself with ``tls`` (:meth:`Mesh.bind`): its
    ``with_tls(tls)`` when it has one (the HTTP transport, and the test kit's, which keep
    what they inject or answer), else ``transport`` itself."""
    make = getattr(transport, "with_tls", None)
    return transport if make is None else make(tls)
