"""What a cell declares about its edge: rate limits, bearer-token schemes and CORS.

The decorators parse and check these at import (a bad declaration is a
:class:`~orchestro.errors.CellDefinitionError` naming the method); the gateway enforces them
(``gateway/ratelimit.py``, ``gateway/auth.py``, ``gateway/cors.py``).

```python
@cell("shop", rate_limit="600/min", auth="jwt",
      cors=CORS(origins=["https://shop.example"], credentials=True))
class Shop:
    @service.get("/search", rate_limit="20/s burst 40")
    async def search(self, q: str, caller: Caller) -> Results: ...

    @service.get("/status", auth="none", rate_limit="unlimited")
    async def status(self) -> Status: ...
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ..errors import CellDefinitionError

__all__ = [
    "AUTH_SCHEMES",
    "CORS",
    "RATE_LIMIT_FORMS",
    "UNLIMITED",
    "RateLimit",
    "parse_auth",
    "parse_rate_limit",
]

RATE_LIMIT_FORMS: Final = (
    "'100/s', '6000/min', '10/h', '50/10s', with an optional burst: '100/s burst 20'; "
    "or 'unlimited'"
)
_UNITS: Final = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(
    r"\s*(?P<count>\d+)\s*/\s*(?P<mult>\d*)\s*(?P<unit>[a-z]+)"
    r"(?:\s*[,;]?\s*burst\s*[= ]?\s*(?P<burst>\d+))?\s*",
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` requests per ``window`` seconds per caller, at most ``burst`` at once.

    Enforced as a GCRA (generic cell rate algorithm): one request every ``interval`` seconds
    on average, with ``burst`` of them allowed back to back after an idle spell.
    ``UNLIMITED`` (``"unlimited"``) exempts a service from its cell's limit.
    """

    count: int
    window: float
    burst: int
    text: str = ""

    @property
    def unlimited(self) -> bool:
        return self.count == 0

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate (GCRA's emission interval)."""
        return self.window / self.count

    def __str__(self) -> str:
        return self.text or f"{self.count}/{self.window:g}s burst {self.burst}"


UNLIMITED: Final = RateLimit(0, 0.0, 0, "unlimited")


def parse_rate_limit(value: object, where: str) -> RateLimit:
    """The :class:`RateLimit` that ``value`` declares; ``where`` names the declaration."""
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise _bad_rate(value, where, "it is not a string")
    text = value.strip().lower()
    if text in ("unlimited", "none"):
        return UNLIMITED
    match = _RATE.fullmatch(text)
    if match is None:
        raise _bad_rate(value, where, "it is not in one of the accepted forms")
    unit = _UNITS.get(match["unit"])
    if unit is None:
        raise _bad_rate(value, where, f"{match['unit']!r} is not a unit (s, min, h, d)")
    count = int(match["count"])
    window = unit * int(match["mult"] or 1)
    burst = int(match["burst"]) if match["burst"] else count
    if count < 1 or window <= 0:
        raise _bad_rate(value, where, "the count and the window must be at least 1")
    if burst < 1:
        raise _bad_rate(value, where, "the burst must be at least 1")
    if not math.isfinite(window / count) or window / count < 1e-6:
        raise _bad_rate(value, where, "more than a million a second cannot be limited")
    return RateLimit(count, window, burst, value.strip())


def _bad_rate(value: object, where: str, why: str) -> Exception:
    return CellDefinitionError(
        f"{where}: rate_limit={value!r} is not a rate limit ({why}); the accepted forms are "
        f"{RATE_LIMIT_FORMS}"
    )


AUTH_SCHEMES: Final = ("jwt", "api-key")


def parse_auth(value: object, where: str) -> tuple[str, ...]:
    """The bearer-token schemes ``value`` accepts (any one of them lets a request in); ``()``
    for ``"none"`` (no token needed, even when the cell requires one)."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        items = [value]
    schemes: list[str] = []
    for item in items:
        if item == "none" and len(items) == 1:
            return ()
        if not isinstance(item, str) or item not in AUTH_SCHEMES:
            raise CellDefinitionError(
                f"{where}: auth={value!r} is not a token scheme; use 'jwt', 'api-key', both "
                "as ('jwt', 'api-key') (either lets a request in), or 'none'"
            )
        if item not in schemes:
            schemes.append(item)
    if not schemes:
        raise CellDefinitionError(f"{where}: auth=() names no scheme; use 'none' for no token")
    return tuple(schemes)


_ORIGIN: Final = re.compile(r"https?://[A-Za-z0-9.\-]+(?::\d{1,5})?|\*")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What a browser script may read of an answer besides the CORS-safelisted headers.
_EXPOSED: Final = ("x-request-id", "Retry-After", "RateLimit", "RateLimit-Policy")


@dataclass(frozen=True, slots=True)
class CORS:
    """Which browser origins may call a cell's public services (the Fetch standard's CORS).

    ```python
    @cell("shop", cors=CORS(origins=["https://shop.example"], credentials=True))
    ```

    Args:
        origins: ``scheme://host[:port]`` of each page allowed, or ``["*"]`` for any
            (not with ``credentials``).
        methods: methods a page may use (default: every method the path serves).
        headers: request headers a page may send beyond the safelisted ones
            (default: ``Authorization`` and ``Content-Type``).
        expose: response headers a page may read (default: the request id, ``Retry-After``
            and the ``RateLimit`` headers).
        credentials: pages may send cookies / HTTP auth, and read the answer.
        max_age: seconds a browser may cache a preflight's answer.
    """

    origins: tuple[str, ...]
    methods: tuple[str, ...] = ()
    headers: tuple[str, ...] = ("Authorization", "Content-Type")
    expose: tuple[str, ...] = _EXPOSED
    credentials: bool = False
    max_age: int = 600

    def __init__(
        self,
        origins: Iterable[str],
        *,
        methods: Iterable[str] = (),
        headers: Iterable[str] = ("Authorization", "Content-Type"),
        expose: Iterable[str] = _EXPOSED,
        credentials: bool = False,
        max_age: int = 600,
    ) -> None:
        if isinstance(origins, str):
            origins = [origins]
        setattr_ = object.__setattr__
        setattr_(self, "origins", tuple(origins))
        setattr_(self, "methods", tuple(m.upper() for m in methods))
        setattr_(self, "headers", tuple(headers))
        setattr_(self, "expose", tuple(expose))
        setattr_(self, "credentials", credentials)
        setattr_(self, "max_age", max_age)

    @property
    def any_origin(self) -> bool:
        return "*" in self.origins

    def check(self, where: str) -> None:
        """Raise :class:`~orchestro.errors.CellDefinitionError` for a declaration a browser
        would refuse or that cannot mean what it says."""
        if not self.origins:
            raise CellDefinitionError(
                f"{where}: cors=CORS(origins=[]) allows no page; name each origin, e.g. "
                "CORS(origins=['https://app.example'])"
            )
        for origin in self.origins:
            if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
                raise CellDefinitionError(
                    f"{where}: CORS origin {origin!r} is not scheme://host[:port] (no path, no "
                    "trailing '/') nor '*'"
                )
        if self.any_origin and self.credentials:
            raise CellDefinitionError(
                f"{where}: CORS(origins=['*'], credentials=True) is refused by browsers (the "
                "Fetch standard forbids '*' with credentials): list the origins instead"
            )
        for name in (*self.methods, *self.headers, *self.expose):
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise CellDefinitionError(f"{where}: CORS has a bad method or header {name!r}")
        if not isinstance(self.max_age, int) or not 0 <= self.max_age <= 86400:
            raise CellDefinitionError(
                f"{where}: CORS max_age={self.max_age!r}: use 0-86400 seconds"
            )
