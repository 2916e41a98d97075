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
in the set fetches it again — a key rotation — at most every :data:`MIN_REFETCH` seconds).
While a refresh fails, the last good set is used.

**API keys** are kept as SHA-256 digests only (the file may hold the digests themselves), and
a presented key is compared with every one of them in constant time.

Refusals are 401 problem+json with ``WWW-Authenticate: Bearer realm="<cell>"`` and, when a
token was presented, ``error="invalid_token", error_description="..."`` (RFC 6750 §3).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp import web

from ..config import AuthSettings
from ..errors import ConfigurationError, HTTPError
from ..security.identity import CALLER_KEY, Caller, IdentityResolver, anonymous, caller_of
from .pipeline import Hooks, Route

__all__ = ["MIN_REFETCH", "ApiKeys", "AuthStep", "JsonWebKeys", "TokenVerifier"]

_log = logging.getLogger("orchestro.gateway.auth")

_VERIFIED_MAX: Final = 10_000  # verified tokens remembered (the oldest leave first)
MIN_REFETCH: Final = 10.0  # seconds between two fetches of a JWKS URL, whatever asks
FETCH_TIMEOUT: Final = 5.0

# The EC curve each ES algorithm signs with; the key types each family needs.
_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_FAMILY: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
_UNSAFE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


class Refused(Exception):
    """A token that proves nothing: ``str()`` says why (the 401's description)."""


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    data: Mapping[str, Any]


class JsonWebKeys:
    """A JWKS from a file or a URL, kept fresh (see the module's docstring)."""

    def __init__(
        self,
        source: str,
        *,
        refresh: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.is_url = source.startswith(("https://", "http://"))
        if self.is_url:
            _check_url(source)
        self._refresh = refresh
        self._clock = clock
        self._keys: dict[str | None, _Key] = {}
        self._loaded: dict[tuple[str | None, str], Any] = {}  # (kid, alg) -> key object
        self._fetched = -float("inf")  # when the set was last loaded
        self._tried = -float("inf")  # when a load was last attempted
        self._mtime: int | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0
        self.generation = 0  # moves on whenever a new set is installed
        if not self.is_url:
            self._read_file(initial=True)

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    def due(self) -> bool:
        """Whether the set should be loaded again before it is used."""
        now = self._clock()
        if not self._keys:
            return now - self._tried >= MIN_REFETCH or self._tried == -float("inf")
        return now - self._fetched >= self._refresh and now - self._tried >= MIN_REFETCH

    def may_refetch(self) -> bool:
        """Whether an unknown ``kid`` may load the set again now."""
        return self._clock() - self._tried >= MIN_REFETCH

    def key(self, kid: str | None, alg: str) -> Any:
        """The key object verifying ``alg`` signatures by ``kid``; raises :class:`Refused`."""
        loaded = self._loaded.get((kid, alg))
        if loaded is not None:
            return loaded
        if kid is None:
            fitting = [k for k in self._keys.values() if _fits(k, alg)]
            if len(fitting) != 1:
                raise Refused(
                    "the token names no key ('kid' header) and the JWKS has "
                    f"{len(fitting)} keys for {alg}"
                )
            found = fitting[0]
        else:
            found_or_none = self._keys.get(kid)
            if found_or_none is None:
                raise Refused(f"no key {kid!r} in the JWKS")
            found = found_or_none
        if not _fits(found, alg):
            raise Refused(
                f"the token's alg {alg} does not fit key {found.kid!r} ({found.kty}"
                f"{' ' + found.crv if found.crv else ''}"
                f"{', alg ' + found.alg if found.alg else ''})"
            )
        try:
            obj = jwt.PyJWK(dict(found.data), algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise Refused(f"key {found.kid!r} of the JWKS is unusable: {exc}") from None
        self._loaded[(kid, alg)] = obj
        return obj

    def has(self, kid: str | None) -> bool:
        return kid is None or kid in self._keys

    async def load(self) -> None:
        """Load the set again (one load at a time: concurrent callers wait for the same)."""
        task = self._inflight
        if task is None or task.done():
            task = self._inflight = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(task)

    async def _load(self) -> None:
        self._tried = self._clock()
        if not self.is_url:
            self._read_file()
            return
        self.fetches += 1
        try:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.source, headers={"Accept": "application/json"}) as answer,
            ):
                if answer.status != 200:
                    raise ValueError(f"it answered {answer.status}")
                document = await answer.json(content_type=None)
            self._install(document)
        except Exception as exc:  # a failed refresh keeps the last good set
            _log.warning(
                "cannot load the JWKS from %s (%s: %s)%s",
                self.source,
                type(exc).__name__,
                exc,
                "; still using the keys loaded before" if self._keys else "",
            )

    def _read_file(self, *, initial: bool = False) -> None:
        path = Path(self.source)
        try:
            mtime = path.stat().st_mtime_ns
            if mtime == self._mtime:
                self._fetched = self._clock()
                return
            document = json.loads(path.read_bytes())
            self._install(document)
            self._mtime = mtime
        except (OSError, ValueError) as exc:
            if initial:
                raise ConfigurationError(
                    f"[auth] jwks: cannot read the JWKS file {path} ({exc}); give a JSON Web "
                    "Key Set file or an https:// URL"
                ) from exc
            _log.warning(
                "cannot re-read the JWKS file %s (%s); still using its last keys", path, exc
            )

    def _install(self, document: Any) -> None:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('not a JSON Web Key Set (no "keys" list)')
        keys: dict[str | None, _Key] = {}
        for item in document["keys"]:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            kty = item.get("kty")
            if kty not in ("RSA", "EC", "OKP"):
                continue  # symmetric ("oct") keys are never trusted from a JWKS
            kid = item.get("kid")
            keys[kid if isinstance(kid, str) else None] = _Key(
                kid if isinstance(kid, str) else None, kty, item.get("crv"), item.get("alg"), item
            )
        if not keys:
            raise ValueError("the set has no public signing key")
        self._keys = keys
        self._loaded = {}
        self._fetched = self._clock()
        self.generation += 1


def _fits(key: _Key, alg: str) -> bool:
    if key.alg is not None and key.alg != alg:
        return False
    if _FAMILY.get(alg[:2]) != key.kty:
        return False
    if key.kty == "EC":
        return key.crv == _CURVES.get(alg)
    if key.kty == "OKP":
        return key.crv == "Ed25519"
    return True


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"[auth] jwks: {url} is plain http to another machine, where anyone on the path "
            "could swap the keys; use https://"
        )


class ApiKeys:
    """Named API keys, kept as SHA-256 digests; ``name_of(key)`` compares in constant time."""

    def __init__(self, entries: Iterable[tuple[str, str]], where: str) -> None:
        self._digests: list[tuple[str, bytes]] = []
        for name, value in entries:
            if value.startswith("sha256:"):
                try:
                    digest = bytes.fromhex(value.removeprefix("sha256:"))
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    raise ConfigurationError(
                        f"{where}: key {name!r}: sha256: must be followed by 64 hex digits"
                    )
            else:
                if len(value) < 16:
                    raise ConfigurationError(
                        f"{where}: key {name!r} is {len(value)} characters; an API key needs "
                        "at least 16 (make one with: python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))')"
                    )
                digest = hashlib.sha256(value.encode()).digest()
            self._digests.append((name, digest))

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> ApiKeys:
        entries: list[tuple[str, str]] = []
        if settings.api_keys_file is not None:
            path = settings.api_keys_file
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigurationError(
                    f"[auth] api_keys_file: cannot read {path} ({exc.strerror or exc})"
                ) from exc
            entries += _key_lines(text.splitlines(), f"{path}")
        if settings.api_keys:
            entries += _key_lines(settings.api_keys.split(","), "[auth] api_keys")
        return cls(entries, "[auth] api keys")

    def name_of(self, key: str) -> str | None:
        presented = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, digest in self._digests:  # every one, so the time does not tell which
            if hmac.compare_digest(presented, digest):
                found = name
        return found


def _key_lines(lines: Iterable[str], where: str) -> list[tuple[str, str]]:
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigurationError(
                f"{where}: line {number} is not 'name = key' (or 'name = sha256:<hex>')"
            )
        entries.append((name.strip(), value.strip()))
    return entries


class TokenVerifier:
    """Checks bearer tokens as the ``[auth]`` settings say; built once per gateway."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._now = now
        self._jwks: JsonWebKeys | None = None
        self._keys: ApiKeys | None = None
        self._algorithms = frozenset(settings.jwt_algorithms)
        # Tokens verified already: token -> (caller, valid until (wall clock), JWKS generation).
        # A signature check costs tens of µs; a client sends the same token again and again.
        # An entry lasts until the token's exp (plus leeway), or until a new JWKS is loaded.
        self._verified: OrderedDict[str, tuple[Caller, float, int]] = OrderedDict()

    def require(self, schemes: Iterable[str], where: str) -> None:
        """Check the settings can verify ``schemes`` (at start): a ConfigurationError that
        names what to set otherwise."""
        settings = self.settings
        for scheme in schemes:
            if scheme == "jwt" and self._jwks is None:
                missing = [
                    f"[auth] {name} (ORCHESTRO_{name.upper()})"
                    for name in ("jwks", "jwt_issuer", "jwt_audience")
                    if getattr(settings, name) is None
                ]
                if missing:
                    raise ConfigurationError(
                        f"{where} declares auth='jwt', but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set"
                    )
                assert settings.jwks is not None
                self._jwks = JsonWebKeys(
                    settings.jwks, refresh=settings.jwks_refresh, clock=self._clock
                )
            if scheme == "api-key" and self._keys is None:
                keys = ApiKeys.from_settings(settings)
                if not keys:
                    raise ConfigurationError(
                        f"{where} declares auth='api-key', but no API key is set: set [auth] "
                        "api_keys_file (or ORCHESTRO_API_KEYS)"
                    )
                self._keys = keys

    @property
    def jwks(self) -> JsonWebKeys | None:
        return self._jwks

    def cached(self, token: str) -> Caller | None:
        """What ``token`` proved when it was verified, while that still holds."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        caller, until, generation = entry
        jwks = self._jwks
        if self._now() >= until or jwks is None or generation != jwks.generation:
            del self._verified[token]
            return None
        return caller

    def needs_load(self, token: str, schemes: tuple[str, ...]) -> bool:
        """Whether the JWKS must be loaded before ``token`` can be checked."""
        jwks = self._jwks
        if jwks is None or "jwt" not in schemes or token.count(".") != 2:
            return False
        if jwks.due():
            return True
        if jwks.may_refetch():
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                return False
            return not jwks.has(kid if isinstance(kid, str) else None)
        return False

    def verify(self, token: str, schemes: tuple[str, ...]) -> Caller:
        """The caller ``token`` proves (cell unset); raises :class:`Refused`."""
        if "jwt" in schemes and token.count(".") == 2:
            return self._verify_jwt(token)
        if "api-key" in schemes:
            assert self._keys is not None
            name = self._keys.name_of(token)
            if name is None:
                raise Refused("the API key is not one of this cell's")
            return Caller(subject=name, scheme="api-key")
        raise Refused("the token is not a JWT (three base64url parts separated by dots)")

    def _verify_jwt(self, token: str) -> Caller:
        jwks = self._jwks
        assert jwks is not None
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refused(f"the token is not a readable JWT ({exc})") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Refused(
                f"alg {alg!r} is not accepted (accepted: {', '.join(sorted(self._algorithms))})"
            )
        if not jwks.loaded:
            raise _Unavailable(jwks.source)
        kid = header.get("kid")
        key = jwks.key(kid if isinstance(kid, str) else None, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(f"the token expired{_when(token, 'exp')}") from None
        except jwt.ImmatureSignatureError:
            raise Refused(f"the token is not valid yet{_when(token, 'nbf')}") from None
        except jwt.InvalidAudienceError:
            raise Refused(f"the token is not for audience {settings.jwt_audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Refused(f"the token was not issued by {settings.jwt_issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise Refused(f"the signature does not verify with key {kid!r} of the JWKS") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Refused(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"the token is invalid ({exc})") from None
        caller = Caller(subject=str(claims["sub"]), scheme="jwt", claims=MappingProxyType(claims))
        verified = self._verified
        if len(verified) >= _VERIFIED_MAX:
            verified.popitem(last=False)
        verified[token] = (caller, float(claims["exp"]) + settings.jwt_leeway, jwks.generation)
        return caller


def _when(token: str, claim: str) -> str:
    try:
        value: Any = jwt.decode(token, options={"verify_signature": False}).get(claim)
        stamp = dt.datetime.fromtimestamp(float(value), dt.UTC)
    except (jwt.PyJWTError, TypeError, ValueError, OverflowError):
        return ""
    return f" ({claim} {stamp.isoformat(timespec='seconds').replace('+00:00', 'Z')})"


class _Unavailable(Exception):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source


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
            except _Unavailable as exc:
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
            header = request.headers.get("Authorization")
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
            if known is not None:
                enter(request, known)
                return None
            if verifier.needs_load(token, schemes):
                return load_then_admit(request, token)
            admit(request, token)
            return None

        return Hooks(check)
