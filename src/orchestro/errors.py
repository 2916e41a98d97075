"""The one error tree of orchestro.

Every error orchestro raises on purpose is an :class:`OrchestroError`; errors of the libraries
underneath (aiohttp, pydantic, the OS) are wrapped with ``raise ... from exc`` at the boundary
where they happen, so callers catch one family::

    OrchestroError
    ├── ConfigurationError        a setting, flag or environment variable has a bad value
    │   ├── CellDefinitionError   a @cell or @service declaration is wrong (raised at import time)
    │   ├── TargetError           `orchestro run TARGET` cannot find or load the cells
    │   │   └── UserModuleError   the user's module raised while it was imported
    │   └── IdentityError         a certificate does not name a cell of the trust domain
    ├── StartupError              a cell could not start: port in use, on_start failed
    ├── DiscoveryError            the registry cannot be reached or read
    ├── CallError                 a call through the mesh failed
    │   ├── NoInstancesError      no instance of the cell is ready
    │   ├── CircuitOpenError      every instance of the cell is ejected
    │   ├── DeadlineExceeded      the call's deadline passed
    │   ├── RetryBudgetExhausted  a retry was needed but the retry budget is spent
    │   ├── TransportError        the instance could not be reached
    │   └── RemoteError           the callee answered with an error (status, problem+json)
    └── HTTPError                 raised by a service to answer with an RFC 9457 problem
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

__all__ = [
    "CallError",
    "CellDefinitionError",
    "CircuitOpenError",
    "ConfigurationError",
    "DeadlineExceeded",
    "DiscoveryError",
    "HTTPError",
    "IdentityError",
    "NoInstancesError",
    "OrchestroError",
    "RemoteError",
    "RetryBudgetExhausted",
    "StartupError",
    "TargetError",
    "TransportError",
    "UserModuleError",
]


class OrchestroError(Exception):
    """Base class of every error orchestro raises on purpose."""


class ConfigurationError(OrchestroError):
    """A setting has a bad value. The message names the setting and the fix."""


class CellDefinitionError(ConfigurationError):
    """A ``@cell`` class or ``@service`` method is declared wrongly.

    Raised while the module that declares it is imported; the message names the class, the
    method and the fix.
    """


class IdentityError(ConfigurationError):
    """A certificate or SPIFFE ID does not name a cell of the expected trust domain."""


class TargetError(ConfigurationError):
    """The target given to ``orchestro run`` cannot be imported or holds no cells."""


class UserModuleError(TargetError):
    """The user's module raised while it was imported (a ``SyntaxError``, an ``ImportError``
    of something it imports, ...). ``str()`` is the traceback of the user's own frames and
    the cause; the original exception is ``__cause__``. The CLI exits with 1 for it."""


class StartupError(OrchestroError):
    """A cell could not start (its port is in use, or its ``on_start`` hook failed)."""


class DiscoveryError(OrchestroError):
    """The registry cannot be reached or read; the message names its URL."""


class CallError(OrchestroError):
    """A call through the mesh failed. ``cell`` names the target."""

    def __init__(self, message: str, *, cell: str = "") -> None:
        super().__init__(message)
        self.cell = cell


class NoInstancesError(CallError):
    """No instance of the target cell is registered and ready."""


class CircuitOpenError(CallError):
    """Every instance of the target cell is ejected for failing."""


class DeadlineExceeded(CallError):
    """The call's deadline passed (its timeout, or what its caller had left)."""


class RetryBudgetExhausted(CallError):
    """A retry was needed, but retries already make up the budgeted share of traffic."""


class TransportError(CallError):
    """The instance could not be reached; ``connect`` is True if nothing was sent."""

    def __init__(self, message: str, *, cell: str = "", connect: bool = False) -> None:
        super().__init__(message, cell=cell)
        self.connect = connect


class RemoteError(CallError):
    """The callee answered with an error status; ``problem`` is its problem+json body."""

    def __init__(
        self, message: str, *, cell: str = "", status: int, problem: dict[str, Any]
    ) -> None:
        super().__init__(message, cell=cell)
        self.status = status
        self.problem = problem


class HTTPError(OrchestroError):
    """Raise from a service to answer with an RFC 9457 ``application/problem+json`` body.

    ```python
    @service.get("/orders/{order_id}", responses={404: "No such order"})
    async def get_order(self, order_id: int) -> Order:
        if order_id not in self.orders:
            raise HTTPError(404, f"order {order_id} does not exist")
        return self.orders[order_id]
    ```

    Extra keyword arguments become extension members of the problem object.
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be 4xx or 5xx, not {status}")
        self.status = status
        self.title = title if title is not None else _reason(status)
        self.detail = detail
        self.type = type
        self.headers: dict[str, str] = dict(headers or {})
        self.extensions = extensions
        super().__init__(f"{status} {self.title}" + (f": {detail}" if detail else ""))

    def to_problem(self) -> dict[str, Any]:
        """The problem object (RFC 9457 members first, then extensions)."""
        problem: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            problem["detail"] = self.detail
        problem.update(self.extensions)
        return problem


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
