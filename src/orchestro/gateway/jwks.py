"""A JSON Web Key Set from a file or a URL, kept fresh, and which of its keys may verify what.

A file is read at start (a bad file stops the start) and re-read when it changes; a URL
(``https://``, or ``http://`` to loopback) is fetched on first use, one fetch at a time, cached
for ``refresh`` seconds, and fetched again for an unknown ``kid`` (a rotation) at most every
:data:`MIN_REFETCH` seconds. A failed refresh keeps the last good set. Symmetric (``oct``) keys
are never taken from a set, and a key verifies only the algorithms that fit it
(:func:`fits`): its family, its curve, its own ``alg`` if it names one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import jwt

from ..errors import ConfigurationError

__all__ = ["FETCH_TIMEOUT", "MIN_REFETCH", "JsonWebKeys", "Refused", "fits"]

_log = logging.getLogger("orchestro.gateway.auth")

MIN_REFETCH: Final = 10.0  # seconds between two fetches of a JWKS URL, whatever asks
FETCH_TIMEOUT: Final = 5.0
# A key set is a few KiB; a larger answer is not one (and is not read whole into memory).
MAX_JWKS_BYTES: Final = 1 << 20

# The EC curve each ES algorithm signs with; the key types each family needs.
_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_FAMILY: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


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

    @property
    def loading(self) -> bool:
        """Whether a load is under way (a request that needs it waits for the same one)."""
        return self._inflight is not None and not self._inflight.done()

    def due(self) -> bool:
        """Whether the set should be loaded again (or the load under way waited for) before
        it is used."""
        now = self._clock()
        if not self._keys:
            # With no keys yet, a request arriving while the first fetch runs waits for it:
            # it would otherwise be refused with 503 although the keys are a moment away.
            return self.loading or now - self._tried >= MIN_REFETCH or self._tried == -float("inf")
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
            fitting = [k for k in self._keys.values() if fits(k, alg)]
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
        if not fits(found, alg):
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
                # No redirects: one to plain http (or elsewhere) would get around the
                # https-only check of the URL.
                session.get(
                    self.source, headers={"Accept": "application/json"}, allow_redirects=False
                ) as answer,
            ):
                if answer.status != 200:
                    raise ValueError(f"it answered {answer.status}")
                body = bytearray()
                async for chunk in answer.content.iter_any():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"its answer is larger than {MAX_JWKS_BYTES} bytes")
                document = json.loads(body)
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


def fits(key: _Key, alg: str) -> bool:
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
