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

__all__ = [
    "DEADLINE_HEADER",
    "MAX_DEADLINE_MS",
    "InvalidDeadline",
    "current_deadline",
    "parse_deadline",
]

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


# The longest deadline a header can give: a day. Larger values (and inf) are clamped to it, so
# that no caller can hand the timer, or the calls made in turn, an absurd deadline.
MAX_DEADLINE_MS: Final = 86_400_000.0


class InvalidDeadline(ValueError):
    """A deadline header that is not a number of milliseconds (the gateway answers 400)."""


def parse_deadline(value: str) -> float:
    """The absolute deadline (``time.monotonic()``) for a header value.

    The value is the milliseconds remaining, a decimal number. It is clamped to
    ``[0, MAX_DEADLINE_MS]`` (a negative one has already passed; ``inf`` or a 400-digit number
    is a day); anything that is not a number, and NaN, raise :class:`InvalidDeadline`.
    """
    try:
        remaining_ms = float(value)
    except ValueError:
        remaining_ms = float("nan")
    if not remaining_ms <= MAX_DEADLINE_MS:  # also NaN
        if remaining_ms != remaining_ms or "_" in value:
            raise InvalidDeadline(_invalid(value))
        remaining_ms = MAX_DEADLINE_MS
    elif remaining_ms < 0.0:
        remaining_ms = 0.0
    elif "_" in value:  # float() takes "1_000"; the header's grammar does not
        raise InvalidDeadline(_invalid(value))
    return time.monotonic() + remaining_ms / 1000.0


def _invalid(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return (
        f"header {DEADLINE_HEADER} must be the milliseconds remaining, a number "
        f"(0 to {int(MAX_DEADLINE_MS)}; larger values are clamped); got {shown!r}"
    )
