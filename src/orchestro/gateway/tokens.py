"""Bearer-token verification: JWTs against a :class:`~.jwks.JsonWebKeys`, and API keys.

:class:`TokenVerifier` is built once per gateway from the ``[auth]`` settings; ``verify``
returns the :class:`~orchestro.security.Caller` a token proves or raises
:class:`~.jwks.Refused` saying why. See ``gateway/auth.py`` for the step that uses it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, Final

import jwt

from ..config import AuthSettings
from ..errors import ConfigurationError
from ..security.identity import Caller
from .jwks import JsonWebKeys, Refused

__all__ = ["ApiKeys", "TokenVerifier", "Unavailable"]

_NUMERIC_DATES: Final = ("exp", "nbf", "iat")
_VERIFIED_MAX: Final = 10_000  # verified tokens remembered (the oldest leave first)


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
        if jwks.may_refetch() or jwks.loading:  # an unknown kid waits for a fetch under way
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
            raise Unavailable(jwks.source)
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
        for name in _NUMERIC_DATES:
            # PyJWT takes "1796180774" (a string) for a time too; RFC 7519 says a number,
            # and the handler and the cache would otherwise meet a string where a time is.
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Refused(
                    f"the token's {name!r} claim is not a number (a NumericDate, RFC 7519)"
                )
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


class Unavailable(Exception):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source
