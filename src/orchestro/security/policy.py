"""Access policy: which cells may call which services, decided per request from the caller.

Declared in code (the wiring into ``@cell(allow=...)`` / ``@service(allow=...)`` and the
gateway's access step comes with the mesh listener)::

    @cell("vault", allow=["teller"])              # who may call this cell's internal services
    class Vault:
        @service.get("/secret", internal=True)
        async def secret(self) -> Secret: ...
        @service.post("/audit", internal=True, allow=["auditor"])   # this service: auditor only

The rules, one per service, built once when the gateway is built:

* a public service answers anyone (no identity is read);
* an internal service with no ``allow`` on it or its cell answers any cell proven by the trust
  domain, and refuses anonymous callers;
* with ``allow`` on the cell, its internal services answer those cells only; ``allow`` on a
  service replaces its cell's list for that service.

A refusal is a :class:`Decision` whose message names the rule, the cell and the caller::

    cell 'vault' allows only ['teller'] for GET /secret; caller is cell 'shop'

In :attr:`PolicyMode.AUDIT` a refusal is logged and counted but the request goes on.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ..errors import CellDefinitionError, HTTPError
from .identity import Caller

__all__ = ["AccessRule", "Decision", "PolicyMode", "access_rule"]

_log = logging.getLogger("orchestro.security.policy")


class PolicyMode(enum.StrEnum):
    ENFORCE = "enforce"  # a refusal answers 403
    AUDIT = "audit"  # a refusal is logged; the request is served


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a caller may call an operation, and the rule that said so."""

    allowed: bool
    rule: str  # "public", "internal" or "allow"
    message: str = ""
    cell: str = ""
    operation: str = ""
    caller: Caller | None = None

    @property
    def audited(self) -> bool:
        """Whether audit mode lets this refusal through (logged and counted): only an
        allow-list's. That internal services refuse anonymous callers is the boundary
        itself, never audited: audit mode must not open them to anyone."""
        return self.rule == "allow"

    def to_http_error(self) -> HTTPError:
        """The 403 problem a refusal answers with (``caller``, ``cell``, ``rule`` members)."""
        caller = self.caller
        return HTTPError(
            403,
            self.message,
            cell=self.cell,
            operation=self.operation,
            caller=None if caller is None else caller.cell,
            rule=self.rule,
        )


_PUBLIC: Final = Decision(True, "public")


@dataclass(frozen=True, slots=True)
class AccessRule:
    """The rule of one service of one cell; :meth:`check` is the per-request decision."""

    cell: str
    operation: str  # "GET /secret"
    internal: bool
    allow: frozenset[str] | None  # None: any proven cell
    declared_on: str  # "cell", "service" or "calls" (derived): where the allow-list came from

    @property
    def needs_identity(self) -> bool:
        """Whether the caller's identity must be read at all (not for public services)."""
        return self.internal

    def check(self, caller: Caller) -> Decision:
        if not self.internal:
            return _PUBLIC
        if self.allow is None or caller.cell is None:
            # No cell at all is refused by the boundary itself, whatever the allow-list.
            if caller.cell is not None:
                return Decision(True, "internal", cell=self.cell, operation=self.operation)
            return Decision(
                False,
                "internal",
                f"service {self.operation} of cell {self.cell!r} is internal: only cells of "
                f"the trust domain may call it; caller is {_who(caller)}",
                self.cell,
                self.operation,
                caller,
            )
        if caller.cell in self.allow:
            return Decision(True, "allow", cell=self.cell, operation=self.operation)
        listed = sorted(self.allow)
        if self.declared_on == "cell":
            message = f"cell {self.cell!r} allows only {listed} for {self.operation}"
        elif self.declared_on == "calls":
            message = (
                f"cell {self.cell!r} is called only by {listed} in the cells' code (policy "
                f"strict: the derived allow-list) for {self.operation}"
            )
        else:
            message = f"service {self.operation} of cell {self.cell!r} allows only {listed}"
        return Decision(
            False,
            "allow",
            f"{message}; caller is {_who(caller)}",
            self.cell,
            self.operation,
            caller,
        )

    def enforce(self, caller: Caller, mode: PolicyMode = PolicyMode.ENFORCE) -> Decision:
        """:meth:`check`, raising the 403 :class:`~orchestro.errors.HTTPError` of a refusal
        (in audit mode, logging it instead)."""
        decision = self.check(caller)
        if not decision.allowed:
            if mode is PolicyMode.ENFORCE or not decision.audited:
                raise decision.to_http_error()
            _log.warning("policy audit: would refuse: %s", decision.message)
        return decision


def _who(caller: Caller) -> str:
    return f"cell {caller.cell!r}" if caller.cell else "anonymous (no client certificate)"


def access_rule(
    *,
    cell: str,
    method: str,
    path: str,
    internal: bool,
    cell_allow: Iterable[str] | None = None,
    service_allow: Iterable[str] | None = None,
    derived: Iterable[str] | None = None,
) -> AccessRule:
    """The rule of service ``method path`` of ``cell`` from what was declared.

    ``derived`` (the cells whose code calls ``cell``, for ``--policy strict``) applies only
    where nothing is declared on the service or its cell.

    ``allow`` on a public service is a definition error: a public service answers anyone on
    the public port, so a list of cells could never hold.
    """
    operation = f"{method.upper()} {path}"
    if service_allow is not None and not internal:
        raise CellDefinitionError(
            f"cell {cell!r}, service {operation}: allow= needs internal=True (a public service "
            "answers anyone on the public port)"
        )
    if service_allow is not None:
        return AccessRule(cell, operation, internal, _names(service_allow, cell), "service")
    if cell_allow is not None:
        return AccessRule(cell, operation, internal, _names(cell_allow, cell), "cell")
    if derived is not None:
        return AccessRule(cell, operation, internal, _names(derived, cell), "calls")
    return AccessRule(cell, operation, internal, None, "cell")


def _names(names: Iterable[str], cell: str) -> frozenset[str]:
    if isinstance(names, str):
        raise CellDefinitionError(
            f"cell {cell!r}: allow= is a list of cell names, e.g. allow=[{names!r}]"
        )
    return frozenset(names)
