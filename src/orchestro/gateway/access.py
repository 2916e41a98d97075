"""The inbound pipeline's access step: who may call a service, decided from the connection.

One :class:`~orchestro.security.policy.AccessRule` per route, built when the gateway is built
from what ``@cell(allow=...)`` and ``@service.*(allow=...)`` declared (and, under ``--policy
strict``, the callers found in the cells' code). Public services read no identity and run
nothing here. For an internal service the caller is read from the connection (the mesh
listener's verified client certificate; anonymous on a plain port) and checked::

    403 application/problem+json
    {"detail": "cell 'vault' allows only ['teller'] for GET /secret; caller is cell 'shop'",
     "cell": "vault", "operation": "GET /secret", "caller": "shop", "rule": "allow", ...}

In audit mode a refusal is counted and logged (once per operation and caller) and the
request goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from ..security.identity import CALLER_KEY, IdentityResolver
from ..security.policy import AccessRule, PolicyMode, access_rule
from .pipeline import Hooks, Route

__all__ = ["AccessStep", "Refusals", "rule_of"]

_log = logging.getLogger("orchestro.security.policy")


class Refusals:
    """What audit mode would have refused: a count per (operation, caller, rule)."""

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.counts: dict[tuple[str, str, str], int] = {}

    def seen(self, key: tuple[str, str, str], message: str) -> None:
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        if count == 0:  # one line per operation and caller; the count says how often
            _log.warning("policy audit: would refuse: %s", message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def rule_of(route: Route, derived: Iterable[str] | None = None) -> AccessRule | None:
    """The access rule of a service route (``None`` for the gateway's own routes)."""
    op = route.operation
    if op is None:
        return None
    return access_rule(
        cell=route.cell.name,
        method=op.service.method,
        path=op.service.path,
        internal=op.service.internal,
        cell_allow=route.cell.allow,
        service_allow=op.service.allow,
        derived=derived,
    )


class AccessStep:
    """Apply the route's access rule to the caller its connection proves.

    ``derived`` are the cells whose code calls this one (``--policy strict`` and audit);
    ``None``: only what was declared applies.
    """

    def __init__(
        self,
        resolve: IdentityResolver,
        *,
        mode: PolicyMode = PolicyMode.ENFORCE,
        derived: Iterable[str] | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self._resolve = resolve
        self.mode = mode
        self._derived = None if derived is None else frozenset(derived)
        self.refusals = refusals

    def hooks(self, route: Route) -> Hooks | None:
        rule = rule_of(route, self._derived)
        if rule is None or not rule.needs_identity:
            return None
        resolve = self._resolve
        check = rule.check
        if self.mode is PolicyMode.ENFORCE:

            def enforce(request: web.BaseRequest) -> None:
                caller = resolve(request)
                request[CALLER_KEY] = caller
                decision = check(caller)
                if not decision.allowed:
                    raise decision.to_http_error()

            return Hooks(enforce)
        refusals = self.refusals or Refusals(route.cell.name)
        self.refusals = refusals

        def audit(request: web.BaseRequest) -> None:
            caller = resolve(request)
            request[CALLER_KEY] = caller
            decision = check(caller)
            if not decision.allowed:
                if not decision.audited:  # the boundary itself: enforced in audit mode too
                    raise decision.to_http_error()
                refusals.seen((rule.operation, str(caller.cell), decision.rule), decision.message)

        return Hooks(audit)
