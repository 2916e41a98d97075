"""The resilience pipeline of a remote call: choose an instance, send, classify, retry or
hedge, within the call's deadline and the target's retry budget.

```
resolve (registry view, locality; none ready: wait for one, within the deadline)
  ─► outlier ejection ─► balancer ─► deadline header ─► transport ─► classify
  ─► retry (tenacity backoff, idempotent only — or any method when the callee refused the
     request unprocessed — within the retry budget and the deadline)
```

:class:`CallPipeline` is the base of :class:`~.core.Mesh`, which supplies what it reads (a
transport, a resolver, the targets, telemetry). The hot path of every remote call is
:meth:`CallPipeline.call`: one coroutine for the whole call, attempts inline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from tenacity import RetryCallState

from ..deadline import ATTEMPT_HEADER, CALLER_HEADER, DEADLINE_HEADER, current_deadline
from ..errors import (
    CallError,
    CircuitOpenError,
    DeadlineExceeded,
    NoInstancesError,
    RetryBudgetExhausted,
    TransportError,
)
from ..registry import RegistryView
from .outcomes import draining, remote_error, retry_after, retryable, unprocessed
from .policy import CallPolicy, Policies
from .resolver import Resolver
from .target import Pick, Target, TargetTable
from .transports.base import CallRequest, CallResponse, Transport
from .waiting import InstanceWaits, unprocessed_pause

if TYPE_CHECKING:
    from .telemetry import MeshTelemetry

__all__ = ["CallPipeline"]

T = TypeVar("T")

_ATTEMPTS = tuple(str(n) for n in range(10))  # attempt header values, made once


class CallPipeline:
    """Calls to other cells under the resilience pipeline (see the module)."""

    view: RegistryView
    policies: Policies
    transport: Transport
    _caller: str | None
    _now: Callable[[], float]
    _resolver: Resolver
    _targets: TargetTable
    _waits: InstanceWaits
    _view_loaded: bool
    _obs: MeshTelemetry | None

    def _observe(self) -> MeshTelemetry | None:
        raise NotImplementedError

    def policy_for(self, cell: str, operation: str | None = None) -> CallPolicy:
        if operation is None:
            return self.policies.for_cell(cell)
        return self.policies.for_operation(cell, operation)

    @overload
    async def call(
        self, cell: str, request: CallRequest, policy: CallPolicy | None = None
    ) -> CallResponse: ...

    @overload
    async def call(
        self,
        cell: str,
        request: CallRequest,
        policy: CallPolicy | None,
        decode: Callable[[CallResponse], T],
    ) -> T: ...

    async def call(
        self,
        cell: str,
        request: CallRequest,
        policy: CallPolicy | None = None,
        decode: Callable[[CallResponse], Any] | None = None,
    ) -> Any:
        """Send ``request`` to an instance of ``cell`` under the resilience pipeline; the
        answer, or ``decode(answer)``."""
        # The hot path of every remote call: one coroutine for the whole call, attempts
        # inline, one clock read before the first attempt and one after each. Each coroutine
        # layer, object and call here costs on every call, and the client-side benchmark
        # (bench/mesh.py) sees it.
        if policy is None:
            policy = self.policy_for(cell)
        target = self._targets.get(cell, policy)
        obs = self._obs if self._obs is not None else self._observe()
        traced = None
        if obs is not None and obs.records():
            traced = obs.start_call(cell, request.operation or f"{request.method} {request.path}")
        try:
            now = self._now()
            deadline = now + policy.timeout
            inherited = current_deadline()
            if inherited is not None and inherited < deadline:
                deadline = inherited
            target.budget.record_request(now)
            if not self._view_loaded and cell not in self._resolver.external:
                if not self.view.loaded:
                    # Just started: wait (within the deadline) for the registry's first
                    # snapshot.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, deadline - self._now())):
                            await self.view.wait_ready()
                    now = self._now()
                self._view_loaded = self.view.loaded  # once loaded, a view stays loaded
            attempt = 1  # requests sent (the attempt header)
            counted = 1  # attempts that count against max_attempts
            resends = 0  # resends of requests refused unprocessed
            waited_until: float | None = None  # the bound on waiting for an instance
            wait_began = 0.0
            tried: list[str] = []
            while True:
                try:
                    if attempt == 1 and policy.hedge and request.idempotent:
                        response = await self._hedged(cell, target, request, deadline, tried)
                        break
                    pick = self._choose(
                        cell,
                        target,
                        request,
                        deadline,
                        attempt,
                        tried,
                        now,
                        counted < policy.max_attempts,
                    )
                    pick.stats.in_flight += 1
                    try:
                        sent = await self.transport.send(
                            pick.instance, pick.request, pick.remaining, pick.headers
                        )
                    except BaseException as exc:
                        abandoned = self._failed(cell, target, pick, exc)
                        if abandoned is not None:
                            raise abandoned from None
                        raise
                    response = self._answered(cell, target, pick, sent)
                    break
                except NoInstancesError:
                    # Restarting, or not started yet: wait (within the deadline, for at most
                    # wait_for_instances in all) for an instance to appear.
                    if waited_until is None:
                        wait_began = self._now()
                        waited_until = min(deadline, wait_began + policy.wait_for_instances)
                    # None listed at all: any that appears is worth trying, one marked
                    # draining too (a pod restarted in place keeps its id).
                    if not await self._waits.wait(cell, waited_until, obs):
                        raise self._resolver.none_found(
                            cell, policy, self._now() - wait_began
                        ) from None
                    now = self._now()
                except CallError as exc:
                    refused = unprocessed(exc)
                    gone = draining(exc) if refused else None
                    if gone is not None:
                        # Ahead of the view: stop choosing it (for a while; see DRAINING_MARK).
                        target.mark_draining(gone, self._now())
                    if not refused and (
                        counted >= policy.max_attempts or not retryable(exc, request)
                    ):
                        raise
                    if not target.budget.try_spend():
                        if obs is not None:
                            obs.count(obs.budget_refusals, cell)
                        raise RetryBudgetExhausted(
                            f"call to {cell!r} failed ({exc}) and the retry budget is spent",
                            cell=cell,
                        ) from exc
                    if refused:
                        resends += 1
                        pause = unprocessed_pause(
                            resends, policy.backoff_base, policy.unprocessed_backoff_max
                        )
                    else:
                        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
                        state.attempt_number = counted
                        pause = target.wait(state)
                    if gone is None and not self._elsewhere(cell, target, tried):
                        # Retry-After is the instance's own: a retry that goes to another,
                        # ready instance does not sleep it (nor one that waits for a new
                        # instance, the first being gone).
                        pause = max(pause, retry_after(exc))
                    if self._now() + pause >= deadline:
                        raise DeadlineExceeded(
                            f"call to {cell!r} failed ({exc}) and its deadline leaves no time "
                            "to retry",
                            cell=cell,
                        ) from exc
                    await asyncio.sleep(pause)
                    attempt += 1
                    if not refused:
                        counted += 1
                    now = self._now()
                    if obs is not None:
                        obs.count(obs.retries, cell)
        except BaseException as exc:
            if traced is not None:
                obs.end_call(traced, exc)  # type: ignore[union-attr]
            raise
        if traced is not None:
            obs.end_call(traced, None)  # type: ignore[union-attr]
        return response if decode is None else decode(response)

    def _elsewhere(self, cell: str, target: Target, tried: list[str]) -> bool:
        """Whether a retry now would go to a ready, available instance not tried yet."""
        fresh = [
            i.id for i in self._resolver.candidates(cell, target, self._now()) if i.id not in tried
        ]
        return bool(fresh) and bool(target.detector.available(fresh))

    async def _hedged(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        tried: list[str],
    ) -> CallResponse:
        """The first attempt, and a backup to another instance if it is slow (from the budget)."""
        delay = target.hedge_delay()
        first = asyncio.ensure_future(self._attempt(cell, target, request, deadline, 1, tried))
        if delay is None:
            return await first
        done, _ = await asyncio.wait({first}, timeout=delay)
        if done:
            return await first
        obs = self._obs
        if not target.budget.try_spend():
            if obs is not None:
                obs.count(obs.budget_refusals, cell)
            return await first
        if obs is not None:
            obs.count(obs.hedges, cell)
        second = asyncio.ensure_future(self._attempt(cell, target, request, deadline, 2, tried))
        pending = {first, second}
        failure: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    error = finished.exception()
                    if error is None:
                        return finished.result()
                    failure = failure or error
        finally:
            for task in pending:
                task.cancel()
        assert failure is not None
        raise failure

    async def _attempt(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        attempt: int,
        tried: list[str],
    ) -> CallResponse:
        """One attempt: choose an instance, send, record the outcome, classify the answer."""
        pick = self._choose(
            cell,
            target,
            request,
            deadline,
            attempt,
            tried,
            self._now(),
            attempt < target.policy.max_attempts,  # another attempt may follow
        )
        pick.stats.in_flight += 1
        try:
            response = await self.transport.send(
                pick.instance, pick.request, pick.remaining, pick.headers
            )
        except BaseException as exc:  # also cancelled: the caller gave up, or a hedge won
            abandoned = self._failed(cell, target, pick, exc)
            if abandoned is not None:
                raise abandoned from None
            raise
        return self._answered(cell, target, pick, response)

    def _choose(
        self,
        cell: str,
        target: Target,
        request: CallRequest,
        deadline: float,
        attempt: int,
        tried: list[str],
        now: float,
        retry_follows: bool = True,
    ) -> Pick:
        """Resolve, skip ejected instances, balance, and stamp the deadline: no I/O.
        ``retry_follows``: another attempt may follow this one (the last attempt is never
        abandoned: nothing would follow, and a slow answer is better than none)."""
        instances = self._resolver.candidates(cell, target, now)
        if not instances:
            raise NoInstancesError(f"no ready instance of cell {cell!r}", cell=cell)
        if instances is not target.seen:
            # Index the instances to choose from once.
            target.seen = instances
            target.by_id = {i.id: i for i in instances}
            target.ids = list(target.by_id)
            target.all_stats = [target.stat(i) for i in target.ids]
        ids = target.ids
        available = target.detector.available(ids)
        if not available:
            raise CircuitOpenError(
                f"every instance of cell {cell!r} is ejected after failing", cell=cell
            )
        if tried:
            # A retry goes to another instance when there is one (Envoy's previous_hosts): a
            # fast-failing instance looks cheap to a latency-based balancer.
            fresh = [i for i in available if i not in tried]
            available = fresh or available
        remaining = deadline - now
        if remaining <= 0:
            raise DeadlineExceeded(f"the deadline of the call to {cell!r} passed", cell=cell)
        capped = False
        if request.idempotent and retry_follows:
            # An attempt that outlives its timeout is abandoned and retried on another
            # instance within the call's deadline (a black-holed instance never answers).
            # The callee is told the attempt's deadline, not the call's (as Envoy does with
            # its per-try timeout): its work past that point is wasted.
            cap = target.attempt_timeout(request)
            if cap is not None and cap < remaining:
                remaining, capped = cap, True
        if available is ids:
            candidates = target.all_stats
            chosen = (
                candidates[0]
                if len(candidates) == 1
                else target.balancer.pick(candidates, request.key, now)
            )
        else:
            chosen = target.balancer.pick([target.stat(i) for i in available], request.key, now)
        tried.append(chosen.id)
        target.detector.on_pick(chosen.id)
        # The request's own headers, then the mesh's (which win).
        headers = {
            **request.headers,
            DEADLINE_HEADER: str(int(remaining * 1000)),
            ATTEMPT_HEADER: _ATTEMPTS[attempt] if attempt < 10 else str(attempt),
        }
        if self._caller:
            headers[CALLER_HEADER] = self._caller
        instance = target.by_id[chosen.id]
        pick = Pick(chosen, instance, request, headers, now, remaining, ids, capped)
        obs = self._obs
        if obs is not None:
            pick.span = obs.start_attempt(
                cell, request.method, instance, request.path, attempt, headers
            )
        return pick

    def _failed(
        self, cell: str, target: Target, pick: Pick, error: BaseException
    ) -> TransportError | None:
        """An attempt raised (could not connect, timed out, was cancelled). Returns the error
        to raise instead when the attempt outlived its attempt timeout (not the call's
        deadline), else None: ``error`` itself is raised."""
        if pick.capped and isinstance(error, DeadlineExceeded):
            error = abandoned = _abandoned(cell, pick)
        else:
            abandoned = None
        pick.stats.in_flight -= 1
        end = pick.ended = self._now()
        if not isinstance(error, TransportError):
            # No answer is no latency: an attempt abandoned at its timeout, or a connect
            # into a partition, is a failure for the outlier detector (which ejects, and
            # probes back), not a cost for the balancer. Taken as latency, its second-long
            # peak kept a host that was never ejected out of p2c's choice for ~50 s after
            # it recovered (the peak decays over 10 s time constants).
            pick.stats.observe(end - pick.started, end)
        result = type(error).__name__
        if isinstance(error, CallError):
            target.detector.record(pick.stats.id, False, pick.ids, end)
            error.cell = cell
        obs = self._obs
        if obs is not None:
            obs.record(cell, pick.request.method, result, end - pick.started)
            if pick.span is not None:
                obs.end_attempt(pick.span, result)
        return abandoned

    def _answered(
        self, cell: str, target: Target, pick: Pick, response: CallResponse
    ) -> CallResponse:
        """An attempt got an answer: load statistics, failure accounting, telemetry; raise
        the remote error for a 4xx or 5xx."""
        stats = pick.stats
        stats.in_flight -= 1
        end = pick.ended = self._now()
        took = end - pick.started
        stats.observe(took, end)
        status = response.status
        target.detector.record(stats.id, status < 500, pick.ids, end)
        obs = self._obs
        if obs is not None:
            obs.record(cell, pick.request.method, status, took)
            if pick.span is not None:
                obs.end_attempt(pick.span, status)
        if status < 400:
            target.latencies.append(took)
            target.timer(pick.request).observe(took)
            return response
        if status < 500:
            target.latencies.append(took)
            target.timer(pick.request).observe(took)
        error = remote_error(cell, pick.instance, response)
        if pick.capped and isinstance(error, DeadlineExceeded):
            # The callee stopped at the attempt's deadline, not the call's: retryable.
            error = _abandoned(cell, pick)
        raise error


def _abandoned(cell: str, pick: Pick) -> TransportError:
    """The error of an attempt that outlived its attempt timeout (not the call's deadline):
    a transport failure, so an idempotent call is retried on another instance, and the
    instance's outlier detector counts it (Envoy's local-origin failures)."""
    return TransportError(
        f"cell {cell!r} ({pick.instance.url}) did not answer within the attempt timeout "
        f"of {pick.remaining:.3f} s",
        cell=cell,
    )
