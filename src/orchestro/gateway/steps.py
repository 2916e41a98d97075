"""The inbound pipeline's steps: identity with access policy.

Each is a small object whose ``hooks(route)`` says what it does on a route (see
:mod:`orchestro.gateway.pipeline`); they are composed per route when the gateway is built.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import HTTPError
from ..security.identity import CALLER_KEY, IdentityResolver
from .pipeline import Hooks, Route

__all__ = ["AccessStep"]


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
