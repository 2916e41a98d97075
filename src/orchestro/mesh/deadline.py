"""Deadlines that travel: a call's remaining time goes to the callee in a header.

The header carries milliseconds *remaining* (like gRPC's ``grpc-timeout``), so machines need
not agree on the time. The callee's gateway stops the service when it runs out and hands
what is left to the calls the service makes in turn, through a context variable.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEADLINE_HEADER", "current_deadline", "parse_deadline"]

DEADLINE_HEADER: Final = "x-orchestro-deadline-ms"
ATTEMPT_HEADER: Final = "x-orchestro-attempt"
CALLER_HEADER: Final = "x-orchestro-caller"  # informational: never trusted for access
# On a 504 from a gateway that stopped a service at its caller's deadline: the caller reports
# DeadlineExceeded, whichever of its own timer and this answer comes first.
EXPIRED_HEADER: Final = "x-orchestro-deadline-exceeded"

# The deadline (time.monotonic) of the inbound request being served, if it brought one.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "orchestro_deadline", default=None
)


# The deadline of the request being served, or None: the variable's own getter (no wrapper
# function: the mesh reads it on every call).
current_deadline: Callable[[], float | None] = _deadline.get


def set_deadline(deadline: float | None) -> contextvars.Token[float | None]:
    return _deadline.set(deadline)


def parse_deadline(value: str) -> float | None:
    """The absolute deadline (monotonic) for a header value, or None if it is not a number."""
    try:
        remaining_ms = float(value)
    except ValueError:
        return None
    if remaining_ms != remaining_ms or remaining_ms < 0:  # NaN or negative
        return None
    return time.monotonic() + remaining_ms / 1000.0
