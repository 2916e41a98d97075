"""Bearer tokens on services: JWTs checked against a JWKS, or API keys.

A service (or its cell) declares ``auth="jwt"``, ``auth="api-key"`` or both; the ``[auth]``
settings (:class:`~orchestro.config.AuthSettings`) say what is valid. A caller presents
``Authorization: Bearer <token>``; what the token proves joins the
:class:`~orchestro.security.Caller` a handler asks for (``subject``, ``scheme``, ``claims``).
A caller proven by its mutual-TLS certificate (another cell) needs no token; a token it sends
anyway is checked and its claims are handed on.

**JWT** (PyJWT): a token verified once is remembered (up to 10,000, until its ``exp`` or a
new JWKS): a signature check costs tens of µs, and a client sends the same token many times.
The header's ``alg`` must be on the allow-list (asymmetric only: no
``none``, no HS*) *and* fit the key its ``kid`` names (RSA keys for RS/PS, the EC curve of
ES256/384/512, Ed25519 for EdDSA), so an RSA public key can never be used as an HMAC secret.
``exp``, ``iss``, ``aud`` and ``sub`` are required; ``exp``/``nbf``/``iat`` get the
configured leeway. The JWKS comes from a file (read at start, re-read when it changes) or a
URL (fetched on first use, cached for ``jwks_refresh`` seconds; a token whose ``kid`` is not
in the set fetches it again — a key rotation — at most every :data:`~.jwks.MIN_REFETCH` seconds).
While a refresh fails, the last good set is used.

**API keys** are kept as SHA-256 digests only (the file may hold the digests themselves), and
a presented key is compared with every one of them in constant time.

The checks live in ``gateway/tokens.py`` (:class:`~.tokens.TokenVerifier`, API keys) and
``gateway/jwks.py`` (the key set); this module is the step.

Refusals are 401 problem+json with ``WWW-Authenticate: Bearer realm="<cell>"`` and, when a
token was presented, ``error="invalid_token", error_description="..."`` (RFC 6750 §3).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Final

from aiohttp import web

from ..config import AuthSettings
from ..errors import HTTPError
from ..security.identity import CALLER_KEY, Caller, IdentityResolver, anonymous, caller_of
from .jwks import MIN_REFETCH, Refused
from .pipeline import Hooks, Route
from .tokens import TokenVerifier, Unavailable

__all__ = ["AuthStep"]

# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
_UNSAFE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


class AuthStep:
    """The step that asks a route's callers for a bearer token (see the module docstring)."""

    def __init__(
        self,
        verifier: TokenVerifier | None,
        resolve: IdentityResolver = anonymous,
    ) -> None:
        self._verifier = verifier
        self._resolve = resolve
        self.refused: dict[str, int] = {}  # 401s by scheme(s) (orchestro.gateway.auth_refused)

    @staticmethod
    def schemes_of(route: Route) -> tuple[str, ...]:
        op = route.operation
        if op is None:
            return ()
        return op.service.auth if op.service.auth is not None else route.cell.auth

    def hooks(self, route: Route) -> Hooks | None:
        schemes = self.schemes_of(route)
        if not schemes:
            return None
        verifier = self._verifier
        if verifier is None:
            verifier = self._verifier = TokenVerifier(AuthSettings())
        op = route.operation
        assert op is not None
        verifier.require(schemes, f"service {op.name!r} of cell {route.cell.name!r}")
        resolve = self._resolve
        realm = f'Bearer realm="{route.cell.name}"'
        label = "|".join(schemes)
        needed = (
            f"{route.cell.name}: service {op.name!r} needs a bearer token "
            f"({' or '.join(schemes)}): send Authorization: Bearer <token>"
        )
        refused = self.refused

        def refuse(why: str | None) -> HTTPError:
            refused[label] = refused.get(label, 0) + 1
            if why is None:
                return HTTPError(401, needed, headers={"WWW-Authenticate": realm})
            text = _UNSAFE.sub("?", why)
            return HTTPError(
                401,
                f"{route.cell.name}: the bearer token was refused: {why}",
                headers={
                    "WWW-Authenticate": f'{realm}, error="invalid_token", '
                    f'error_description="{text}"'
                },
            )

        def admit(request: web.BaseRequest, token: str) -> None:
            try:
                proven = verifier.verify(token, schemes)
            except Refused as exc:
                raise refuse(str(exc)) from None
            except Unavailable as exc:
                raise HTTPError(
                    503,
                    f"{route.cell.name}: cannot check tokens: the JWKS at {exc.source} could "
                    "not be loaded yet",
                    headers={"Retry-After": str(int(MIN_REFETCH))},
                ) from None
            enter(request, proven)

        def enter(request: web.BaseRequest, proven: Caller) -> None:
            cell = caller_of(request, resolve).cell
            request[CALLER_KEY] = (
                proven
                if cell is None
                else Caller(cell, proven.subject, proven.scheme, proven.claims)
            )

        async def load_then_admit(request: web.BaseRequest, token: str) -> None:
            jwks = verifier.jwks
            assert jwks is not None
            await jwks.load()
            admit(request, token)

        def check(request: web.BaseRequest) -> Awaitable[None] | None:
            headers = request.headers
            header = headers.get("Authorization")
            if header is not None and len(headers.getall("Authorization")) > 1:
                # Which one counts would be ours to guess: a proxy in front may check the
                # last while we read the first. RFC 6750 section 3.1: invalid_request, 400.
                raise HTTPError(
                    400,
                    f"{route.cell.name}: the request has "
                    f"{len(headers.getall('Authorization'))} Authorization headers: send one",
                    headers={"WWW-Authenticate": f'{realm}, error="invalid_request"'},
                )
            if header is None:
                if caller_of(request, resolve).cell is not None:
                    return None  # a cell, proven by its certificate
                raise refuse(None)
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                if caller_of(request, resolve).cell is not None:
                    return None
                raise refuse(None)
            known = verifier.cached(token)
            if known is not None and known.scheme in schemes:
                # Verified before (for any route): good here only if this route takes its
                # scheme (a JWT must not open a route that takes API keys only).
                enter(request, known)
                return None
            if verifier.needs_load(token, schemes):
                return load_then_admit(request, token)
            admit(request, token)
            return None

        return Hooks(check)
