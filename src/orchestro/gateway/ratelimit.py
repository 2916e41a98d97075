"""Rate limits per caller: GCRA over a bounded table, a 429 with the IETF RateLimit fields.

A service's ``rate_limit="100/s"`` (or its cell's, one budget shared by the cell's services
that declare none) is enforced per caller: the proven cell when the connection proves one,
else the subject of a verified bearer token, else the client's address.

**GCRA** (the generic cell rate algorithm, as in ATM networks and redis-cell) keeps one float
per caller, its *theoretical arrival time* (TAT): a request at ``now`` conforms when
``max(TAT, now) + interval - now <= burst * interval``, and moves the TAT on by ``interval``.
No timer, no window edges: a caller gets ``burst`` requests at once after an idle spell, then
one every ``interval``.

**Bounded memory.** The table is least-recently-used first: each new caller first drops up to
two of the oldest entries whose TAT has passed (an entry in the past is the same as no entry),
and at ``max_keys`` the least recently used entry is dropped even if it is still limited (it
starts afresh if it comes back: counted in ``evicted``). An attacker rotating addresses grows
the table to ``max_keys`` entries at most.

**Answers** follow draft-ietf-httpapi-ratelimit-headers-09 (March 2025): every answer of a
limited route carries ``RateLimit-Policy: "<name>";q=<count>;w=<window>`` and
``RateLimit: "<name>";r=<remaining>;t=<seconds to a full quota>``; a refusal is a 429
problem+json with ``Retry-After`` (whole seconds, rounded up: RFC 9110 allows no fraction).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiohttp import web

from ..cell.edge import RateLimit
from ..errors import HTTPError
from ..security.identity import CALLER_KEY, Caller, IdentityResolver, anonymous
from .pipeline import Hooks, Route

__all__ = ["DEFAULT_MAX_KEYS", "Limiter", "RateLimitStep", "address_of", "caller_key"]

DEFAULT_MAX_KEYS: Final = 100_000

_STATE: Final = web.RequestKey("orchestro.rate_limit", str)  # the RateLimit field's value


class Limiter:
    """One GCRA limit over many keys, with a bounded table (see the module's docstring).

    ``acquire(key, now)`` admits or refuses one request; it returns how many seconds past
    ``now`` the request would have conformed: ``<= 0`` admitted, ``> 0`` refused (nothing
    changes then).
    """

    __slots__ = (
        "_table",
        "evicted",
        "interval",
        "limit",
        "max_keys",
        "name",
        "refused",
        "tolerance",
    )

    def __init__(self, limit: RateLimit, name: str, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit.unlimited:
            raise ValueError("an unlimited RateLimit needs no limiter")
        self.limit = limit
        self.name = name
        self.interval = limit.interval
        self.tolerance = limit.interval * limit.burst
        self.max_keys = max(1, max_keys)
        self._table: OrderedDict[str, float] = OrderedDict()
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._table)

    def acquire(self, key: str, now: float) -> float:
        table = self._table
        tat = table.get(key)
        if tat is None or tat < now:
            if tat is None:
                self._make_room(now)
            tat = now
        new = tat + self.interval
        wait = new - now - self.tolerance
        if wait > 0:
            self.refused += 1
            return wait
        table[key] = new
        table.move_to_end(key)
        return wait

    def remaining(self, wait: float) -> int:
        """Requests left at once after one admitted with ``wait`` (``acquire``'s result)."""
        return int(-wait / self.interval * (1 + 1e-9) + 1e-9)  # not 4.9999999 for 5

    def _make_room(self, now: float) -> None:
        table = self._table
        for _ in range(2):  # idle entries first: their TAT has passed
            if not table:
                return
            oldest = next(iter(table))
            if table[oldest] >= now:
                break
            del table[oldest]
        while len(table) >= self.max_keys:
            table.popitem(last=False)
            self.evicted += 1


def caller_key(request: web.BaseRequest, resolve: IdentityResolver = anonymous) -> str:
    """Whom a request counts against: ``cell:<name>``, ``sub:<scheme>:<subject>`` (a verified
    bearer token), else the client's address (which never starts with ``cell:`` or ``sub:``)."""
    caller: Caller | None = request.get(CALLER_KEY)
    if caller is None and resolve is not anonymous:
        caller = resolve(request)
        request[CALLER_KEY] = caller
    if caller is not None:
        if caller.cell is not None:
            return "cell:" + caller.cell
        if caller.subject is not None:
            return f"sub:{caller.scheme}:{caller.subject}"
    return address_of(request)


def address_of(request: web.BaseRequest) -> str:
    """The client's address: the connection's peer, which aiohttp reads once per request (a
    proxy's ``X-Forwarded-For`` is not proof and is not read)."""
    return request.remote or "?"


class RateLimitStep:
    """The step that enforces each route's rate limit (its service's, else its cell's)."""

    def __init__(
        self,
        resolve: IdentityResolver = anonymous,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._max_keys = max_keys
        self._clock = clock
        self.limiters: list[Limiter] = []
        self._cells: dict[str, Limiter] = {}

    def limiter_for(self, route: Route) -> Limiter | None:
        op = route.operation
        if op is None:
            return None
        own = op.service.rate_limit
        if own is not None:
            if own.unlimited:
                return None
            limiter = Limiter(own, op.name, max_keys=self._max_keys)
            self.limiters.append(limiter)
            return limiter
        shared = route.cell.rate_limit
        if shared is None or shared.unlimited:
            return None
        found = self._cells.get(route.cell.name)
        if found is None:
            found = self._cells[route.cell.name] = Limiter(
                shared, route.cell.name, max_keys=self._max_keys
            )
            self.limiters.append(found)
        return found

    def hooks(self, route: Route) -> Hooks | None:
        limiter = self.limiter_for(route)
        if limiter is None:
            return None
        acquire = limiter.acquire
        remaining = limiter.remaining
        clock = self._clock
        resolve = self._resolve
        limit = limiter.limit
        op = route.operation
        assert op is not None
        # Only a route that learns who its caller is (a token, an internal service, a mesh
        # listener's certificate) keys by identity; any other keys by address, cheaply.
        proven = (
            resolve is not anonymous
            or op.service.internal
            or bool(op.service.auth if op.service.auth is not None else route.cell.auth)
        )
        key_of: Callable[[web.BaseRequest], str] = (
            (lambda request: caller_key(request, resolve)) if proven else address_of
        )
        name = limiter.name
        tolerance = limiter.tolerance
        policy = f'"{limiter.name}";q={limit.count};w={math.ceil(limit.window)}'
        detail = f"{route.cell.name}: more than {limit} requests from this caller" + (
            "" if limiter.name == route.cell.name else f" to {limiter.name!r}"
        )

        def check(request: web.BaseRequest) -> None:
            wait = acquire(key_of(request), clock())
            if wait > 0:
                retry = max(1, math.ceil(wait))
                raise HTTPError(
                    429,
                    f"{detail}; retry after {retry} s",
                    headers={
                        "Retry-After": str(retry),
                        "RateLimit-Policy": policy,
                        "RateLimit": f'"{name}";r=0;t={retry}',
                    },
                )
            request[_STATE] = f'"{name}";r={remaining(wait)};t={math.ceil(wait + tolerance)}'

        def advertise(request: web.BaseRequest, response: web.StreamResponse | None) -> None:
            if response is None or response.prepared:
                return
            headers = response.headers
            headers["RateLimit-Policy"] = policy
            headers["RateLimit"] = request[_STATE]

        return Hooks(check, advertise)
