"""How a mesh attempt's outcome is judged: which failures may be retried, which were never
processed (and so may be sent again for any method), how long the callee asked to wait, and
the error a failed answer becomes."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

from ..deadline import EXPIRED_HEADER
from ..errors import CallError, DeadlineExceeded, RemoteError, TransportError
from ..registry import Instance
from .transports.base import CallRequest, CallResponse

__all__ = [
    "UNPROCESSED_HEADER",
    "draining",
    "remote_error",
    "retry_after",
    "retryable",
    "unprocessed",
]

# Statuses an idempotent call is retried on (429 after its Retry-After).
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# Set by the callee's admission (gateway/admission.py, which the mesh does not import) on a
# 503 it refused before any service code ran; a test pins that both spell it alike.
UNPROCESSED_HEADER: Final = "x-orchestro-unprocessed"


def unprocessed(exc: CallError) -> bool:
    """Whether the callee certainly did not process the request: the connection was refused
    (nothing was sent), or its admission refused it (a 503 marked so). Such a request is
    safe to send again for any method, POST included."""
    if isinstance(exc, TransportError):
        return exc.connect
    if isinstance(exc, RemoteError):
        return exc.status == 503 and exc.problem.get("_unprocessed") is True
    return False


def draining(exc: CallError) -> str | None:
    """The id of the instance that said it is draining (and will refuse every request from
    now on), or None."""
    if isinstance(exc, RemoteError):
        found = exc.problem.get("_draining")
        return found if isinstance(found, str) else None
    return None


def retryable(exc: CallError, request: CallRequest) -> bool:
    """Whether a failed attempt may be sent again: any method if it was not processed, else
    an idempotent one after a transport error or a retryable status."""
    if unprocessed(exc):
        return True
    if isinstance(exc, TransportError):
        return request.idempotent
    if isinstance(exc, RemoteError):
        return request.idempotent and exc.status in _RETRYABLE_STATUS
    return False


def retry_after(exc: CallError) -> float:
    if isinstance(exc, RemoteError):
        value = exc.problem.get("_retry_after")
        if isinstance(value, int | float):
            return float(value)
    return 0.0


def remote_error(cell: str, instance: Instance, response: CallResponse) -> CallError:
    """The error a 4xx or 5xx answer becomes: a :class:`RemoteError` with the callee's
    problem, or :class:`DeadlineExceeded` when the callee stopped at this call's deadline
    (its answer can arrive just before the caller's own timer fires)."""
    if response.status == 504 and response.headers.get(EXPIRED_HEADER):
        return DeadlineExceeded(
            f"cell {cell!r} ({instance.url}) stopped at the call's deadline", cell=cell
        )
    problem: dict[str, Any]
    try:
        parsed = json.loads(response.body) if response.body else {}
        problem = parsed if isinstance(parsed, dict) else {"detail": parsed}
    except ValueError:
        problem = {"detail": response.body[:500].decode(errors="replace")}
    if response.status == 503:
        why = response.headers.get(UNPROCESSED_HEADER)
        if why:
            problem["_unprocessed"] = True
            if why == "draining":
                problem["_draining"] = instance.id
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            problem["_retry_after"] = min(float(retry_after), 60.0)
    detail = problem.get("detail") or problem.get("title") or ""
    return RemoteError(
        f"cell {cell!r} ({instance.url}) answered {response.status}"
        + (f": {detail}" if detail else ""),
        cell=cell,
        status=response.status,
        problem=problem,
    )
