"""The transport protocol: send one request to one instance, get its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ...registry.base import Instance

__all__ = ["CallRequest", "CallResponse", "Transport"]


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
