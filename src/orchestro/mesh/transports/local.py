"""The local transport: a typed call to a cell hosted in this process.

No socket, but the contract of an HTTP call: the callee's admission (a draining cell is not
called; at its ``max_concurrency`` a call is refused with the 503 its gateway would answer,
marked unprocessed, and sent again after its Retry-After while the deadline allows, as the
mesh does over HTTP), copied arguments and answers (the stub's JSON round trip), the same
deadline, the same error translation (``HTTPError`` becomes ``RemoteError`` with its
problem, anything else a 500 ``RemoteError``) and the same client telemetry: a duration per
call and, while spans are recorded, a client span and the callee's server span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import DeadlineExceeded, HTTPError, RemoteError, RetryBudgetExhausted
from ...security.identity import Caller
from ...timer import running_timer

if TYPE_CHECKING:
    from ..telemetry import MeshTelemetry

__all__ = ["call_in_process"]

_log = logging.getLogger("orchestro.mesh")
_clock = time.perf_counter


async def call_in_process(
    cell: str,
    host: Any,
    operation: str,
    arguments: dict[str, Any],
    seconds: float,
    decode: Callable[[Any], Any] | None = None,
    obs: MeshTelemetry | None = None,
    method: str = "POST",
    caller: str | None = None,
    resend: Callable[[str, Any], bool] | None = None,
    policy: Any = None,
    elsewhere: Callable[[Mapping[str, Any]], Awaitable[Any]] | None = None,
    bound: Mapping[str, Any] | None = None,
) -> Any:
    """Await ``operation`` of the cell ``host`` serves, under its access rules (``caller``
    is the calling cell, ``None`` for anonymous), its admission gate and within ``seconds``;
    an answer is ``decode(result)``, errors are translated as over HTTP.

    At the host's ``max_concurrency`` the call waits to be let in, each resend paid by
    ``resend(cell, policy)`` (the retry budget); if the host stops admitting meanwhile (it drains),
    the call goes ``elsewhere(bound)`` (another instance, over the network) when given."""
    authorize = getattr(host, "authorize", None)
    if authorize is not None:
        who = Caller(caller)
        try:
            inject = authorize(operation, who)
        except HTTPError as exc:
            raise RemoteError(
                f"cell {cell!r} (in process) answered {exc.status}: {exc.detail}",
                cell=cell,
                status=exc.status,
                problem=exc.to_problem(),
            ) from None
        if inject:  # the method asks who called: the calling cell, as over the mesh
            arguments = {**arguments, **dict.fromkeys(inject, who)}
    gate = host.gate
    timeout = seconds
    # One deadline for the wait at admission and the call: time spent waiting is the call's.
    deadline = time.monotonic() + timeout
    admission = gate.admission
    if not gate.admits or (admission is not None and gate.in_flight >= admission.limit):
        try:
            await _admitted(cell, gate, deadline, resend, policy)
        except _Closed as closed:
            if elsewhere is None:
                raise closed.error from None
            return await elsewhere(bound or {})
    call = getattr(host.instance, operation)
    # The loop's deadline timer rather than asyncio.timeout(): the same cancellation for a
    # fraction of the cost, which matters on a path that should cost a few microseconds.
    timer = running_timer()
    task = asyncio.current_task()
    assert task is not None
    spans = None
    if obs is not None and obs.records():
        spans = obs.start_local(cell, method, operation)
    started = _clock()
    outcome: int | str = 200
    expiry = timer.start(deadline, task)
    gate.in_flight += 1
    gate.admitted += 1
    try:
        answer = await call(**arguments)
        return answer if decode is None else decode(answer)
    except asyncio.CancelledError as exc:
        if not timer.expired(expiry):
            outcome = "CancelledError"
            raise
        outcome = "DeadlineExceeded"
        raise DeadlineExceeded(
            f"cell {cell!r} (in process) did not answer {operation} within {timeout:.3f} s",
            cell=cell,
        ) from exc
    except HTTPError as exc:
        outcome = exc.status
        raise RemoteError(
            f"cell {cell!r} (in process) answered {exc.status}: {exc.detail or exc.title}",
            cell=cell,
            status=exc.status,
            problem=exc.to_problem(),
        ) from exc
    except Exception as exc:
        outcome = 500
        if spans is not None:
            spans[1].record_exception(exc)
        raise _internal(cell, operation, exc) from exc
    finally:
        timer.stop(expiry)
        gate.in_flight -= 1
        if obs is not None:
            obs.record(cell, method, outcome, _clock() - started)
            if spans is not None:
                obs.end_local(spans, outcome)


class _Closed(Exception):
    """The callee stopped admitting: not worth waiting for (the caller may go elsewhere)."""

    def __init__(self, error: RemoteError) -> None:
        self.error = error


async def _admitted(
    cell: str,
    gate: Any,
    deadline: float,
    resend: Callable[[str, Any], bool] | None = None,
    policy: Any = None,
) -> None:
    """Wait until the callee's admission lets a call in, resending (after its Retry-After)
    while the deadline and the retry budget allow, as the mesh does with a 503 marked
    unprocessed over HTTP; else raise what the caller would get over HTTP. A callee that
    stopped admitting (draining, starting) will not admit again soon: :class:`_Closed`,
    carrying its unprocessed 503, is raised at once."""
    while True:
        admission = gate.admission
        if gate.admits and (admission is None or gate.in_flight < admission.limit):
            return
        refusal = admission.refusal() if admission is not None else None
        problem = (
            refusal.to_problem()
            if refusal is not None
            else {"type": "about:blank", "title": "Service Unavailable", "status": 503}
        )
        problem["_unprocessed"] = True
        error = RemoteError(
            f"cell {cell!r} (in process) answered 503: {problem.get('detail', '')}",
            cell=cell,
            status=503,
            problem=problem,
        )
        pause = 1.0  # the gateway's Retry-After
        problem["_retry_after"] = pause
        if not gate.admits:
            raise _Closed(error)
        if resend is not None and not resend(cell, policy):
            raise RetryBudgetExhausted(
                f"call to {cell!r} failed ({error}) and the retry budget is spent", cell=cell
            ) from error
        if time.monotonic() + pause >= deadline:
            raise DeadlineExceeded(
                f"call to {cell!r} failed ({error}) and its deadline leaves no time to retry",
                cell=cell,
            ) from error
        await asyncio.sleep(pause)


def _internal(cell: str, operation: str, exc: BaseException) -> RemoteError:
    """A service failing in this process looks to its caller as it would over HTTP: a 500."""
    _log.error("cell %s: %s failed", cell, operation, exc_info=exc)
    return RemoteError(
        f"cell {cell!r} (in process) failed in {operation} ({type(exc).__name__})",
        cell=cell,
        status=500,
        problem={"type": "about:blank", "title": "Internal Server Error", "status": 500},
    )
