"""Caller identity: who sent a request, as the inbound pipeline's policy step sees it.

Identity is read from the connection, never from a header a caller can forge. On a plain
connection the caller is anonymous; on the mesh listener's mutual TLS connections
:class:`~orchestro.security.tls.PeerIdentity` reads the cell from the verified client
certificate. The test kit can pin an identity to play the part of another cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from aiohttp import web

__all__ = [
    "ANONYMOUS",
    "CALLER_KEY",
    "Caller",
    "IdentityResolver",
    "anonymous",
    "caller_of",
    "fixed_identity",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """The proven identity of a caller: a cell name, or ``None`` for anonymous."""

    cell: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.cell is None

    def __str__(self) -> str:
        return f"cell {self.cell!r}" if self.cell else "an anonymous caller"


ANONYMOUS: Final = Caller()

IdentityResolver: TypeAlias = Callable[[web.BaseRequest], Caller]
"""Reads the caller's identity from a request's connection."""


def anonymous(request: web.BaseRequest) -> Caller:
    """The resolver for plain connections: every caller is anonymous."""
    return ANONYMOUS


def fixed_identity(cell: str) -> IdentityResolver:
    """A resolver that treats every caller as ``cell`` (for tests)."""
    caller = Caller(cell)

    def resolve(request: web.BaseRequest) -> Caller:
        return caller

    return resolve


CALLER_KEY: Final = web.RequestKey("orchestro.caller", Caller)


def caller_of(request: web.BaseRequest, resolve: IdentityResolver) -> Caller:
    """The caller of ``request``, resolved once, from its connection."""
    caller: Caller | None = request.get(CALLER_KEY)
    if caller is None:
        caller = resolve(request)
        request[CALLER_KEY] = caller
    return caller
