"""The inbound pipeline's steps: admission control, and identity with access policy.

Each is a small object whose ``hooks(route)`` says what it does on a route (see
:mod:`orchestro.gateway.pipeline`); they are composed per route when the gateway is built.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import HTTPError
from ..security.identity import CALLER_KEY, IdentityResolver
from .pipeline import Hooks, Route

__all__ = ["AccessStep", "AdmissionStep", "Gate"]


class Gate:
    """Whether a cell takes service requests now, and how many it is answering.

    The cell host opens it once ``on_start`` is done and closes it when draining starts; the
    admission step and ``/readyz`` read it.
    """

    __slots__ = ("admits", "admitted", "in_flight", "is_open", "reason")

    def __init__(self) -> None:
        self.is_open = False  # ready (what /readyz says)
        self.admits = False  # lets service requests in
        self.reason = "starting"
        self.in_flight = 0
        self.admitted = 0  # requests let in since start (a replica's load report)

    def open(self) -> None:
        self.is_open = self.admits = True
        self.reason = "serving"

    def close(self, reason: str, *, admit: bool = False) -> None:
        """Not ready any more; ``admit``: still answer requests on connections already open
        (a replica whose listener is about to close them, whose peers take new ones)."""
        self.is_open = False
        self.admits = admit
        self.reason = reason


class AdmissionStep:
    """Refuse service requests with 503 + ``Retry-After`` while the cell is not ready, or
    when it already answers ``max_concurrency`` requests; count requests in flight."""

    def __init__(self, gate: Gate, *, max_concurrency: int | None = None) -> None:
        self._gate = gate
        self._limit = max_concurrency

    def hooks(self, route: Route) -> Hooks | None:
        if route.operation is None:
            return None  # health and OpenAPI answer whatever the state
        gate = self._gate
        limit = self._limit if self._limit is not None else float("inf")
        cell = route.cell.name
        busy = f"cell {cell!r} is answering its limit of {self._limit} concurrent requests"

        def admit(request: web.BaseRequest) -> None:
            if not gate.admits:
                raise HTTPError(
                    503, f"cell {cell!r} is {gate.reason}", headers={"Retry-After": "1"}
                )
            if gate.in_flight >= limit:
                raise HTTPError(503, busy, headers={"Retry-After": "1"})
            gate.in_flight += 1
            gate.admitted += 1

        def release(request: web.BaseRequest, response: web.StreamResponse | None) -> None:
            gate.in_flight -= 1

        return Hooks(admit, release)


class AccessStep:
    """Apply access policy, which needs the caller's identity (read from the connection).

    The policy today has one rule: an ``internal`` service answers cells only, so an anonymous
    caller gets 403. Public services need no identity, so nothing runs for them; a service
    that wants to know its caller asks for a :class:`~orchestro.security.Caller` parameter.
    Declared per-cell rules join here with mutual TLS.
    """

    def __init__(self, resolve: IdentityResolver) -> None:
        self._resolve = resolve

    def hooks(self, route: Route) -> Hooks | None:
        op = route.operation
        if op is None or not op.service.internal:
            return None
        resolve = self._resolve
        denied = (
            f"service {op.name!r} of cell {route.cell.name!r} is internal: only other cells "
            "may call it (rule: internal services refuse anonymous callers)"
        )

        def guard(request: web.BaseRequest) -> None:
            caller = resolve(request)
            request[CALLER_KEY] = caller
            if caller.is_anonymous:
                raise HTTPError(403, denied)

        return Hooks(guard)
