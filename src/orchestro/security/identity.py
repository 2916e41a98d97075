"""Caller identity: who sent a request, as the inbound pipeline's policy step sees it.

Identity is read from the connection, never from a header a caller can forge. On a plain
connection the caller is anonymous; on the mesh listener's mutual TLS connections
:class:`~orchestro.security.tls.PeerIdentity` reads the cell from the verified client
certificate. The test kit can pin an identity to play the part of another cell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

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


_NO_CLAIMS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Caller:
    """The proven identity of a caller.

    ``cell``: the calling cell, proven by its mutual-TLS certificate (``None`` otherwise).
    ``subject``: who a verified bearer token names (a JWT's ``sub``, or an API key's name),
    with ``scheme`` (``"jwt"`` or ``"api-key"``) and ``claims`` (the JWT's verified claims;
    empty for an API key). ``is_anonymous`` is about cells: a caller with a token but no
    certificate is still not a cell (internal services stay closed to it).

    ```python
    @service.get("/me", auth="jwt")
    async def me(self, caller: Caller) -> Me:
        return Me(user=caller.subject, scopes=caller.claims.get("scope", ""))
    ```
    """

    cell: str | None = None
    subject: str | None = None
    scheme: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS, hash=False)

    @property
    def is_anonymous(self) -> bool:
        return self.cell is None

    @property
    def is_authenticated(self) -> bool:
        """Proven by a certificate (a cell) or by a verified bearer token."""
        return self.cell is not None or self.subject is not None

    def __str__(self) -> str:
        if self.cell:
            return f"cell {self.cell!r}"
        if self.subject is not None:
            return f"{self.subject!r} (by {self.scheme})"
        return "an anonymous caller"


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
