"""The inbound pipeline: small steps composed around each route once, at start-up.

```
request ─► request id ─► admission ─► policy ─► endpoint: bind → call → render
           └ every route ┘ └─ services only ─┘
answer  ◄─ x-request-id ◄─ admission ◄─────────── errors → problem+json
```

Every route gets the pipeline's frame: a request id (the client's ``x-request-id`` when it
sent a sane one) that goes on every answer, the route's telemetry (:class:`Meter`), its
admission (:class:`~orchestro.gateway.admission.Admission`, service routes only) and the
translation of whatever escapes into problem+json
(:func:`~orchestro.gateway.problem.error_response`). Inside them run the **steps**: an
object whose ``hooks(route)`` returns what it does on that route — a ``before`` hook, which
may raise :class:`~orchestro.errors.HTTPError` to answer instead of the service, and an
``after`` hook, which sees every answer once its ``before`` ran — or ``None`` when it has
nothing to do there and so costs nothing.

The handler :func:`compose` builds awaits the service method's coroutine itself and calls the
hooks as plain functions: each extra coroutine layer or call per request costs throughput that
``bench/gateway.py`` can see (see ``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from ..cell.spec import CellSpec, OperationSpec
from ..deadline import (
    DEADLINE_HEADER,
    EXPIRED_HEADER,
    InvalidDeadline,
    parse_deadline,
    set_deadline,
)
from ..errors import HTTPError
from ..observability.context import set_current
from ..timer import DeadlineTimer, timer_for
from .admission import Admission
from .binding import Binder
from .problem import REQUEST_ID_HEADER, REQUEST_ID_KEY, MalformedRequests, error_response
from .responses import renderer
from .router import Router

__all__ = [
    "CompiledRoute",
    "Endpoint",
    "Handler",
    "Hooks",
    "Meter",
    "Pipeline",
    "Route",
    "Step",
    "compose",
    "service_endpoint",
]

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# A before hook answers None, or an awaitable when it must wait (a JWKS to fetch): the frame
# awaits it then, so that the common, synchronous case costs no coroutine.
Before = Callable[[web.BaseRequest], Awaitable[None] | None]
After = Callable[[web.BaseRequest, web.StreamResponse | None], None]


_clock = time.perf_counter

# A client's request id is echoed only when it is safe to put in logs and headers.
_safe_id = re.compile(r"[\x21-\x7e]{1,128}").fullmatch


@dataclass(frozen=True, slots=True)
class Route:
    """What a step may know about the route it applies to."""

    cell: CellSpec
    path: str
    operation: OperationSpec | None = None  # None for the gateway's own routes


@dataclass(frozen=True, slots=True)
class Hooks:
    """What one step does on one route.

    ``after`` receives ``None`` instead of a response when the request was cancelled (client
    gone, drain deadline passed).
    """

    before: Before | None = None
    after: After | None = None


class Step(Protocol):
    def hooks(self, route: Route) -> Hooks | None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a route finally calls: bind the arguments, await the method, render the result.

    ``bind`` gets the request and its path parameters. Binding and rendering are plain
    functions and the method's coroutine is awaited by the pipeline itself, so a request costs
    one coroutine besides the method's own.
    """

    method: Callable[..., Awaitable[Any]]
    bind: Callable[[web.BaseRequest, Mapping[str, str]], dict[str, Any]] | None = None
    bind_async: Callable[[web.BaseRequest, Mapping[str, str]], Awaitable[dict[str, Any]]] | None = (
        None
    )
    render: Callable[[Any], web.StreamResponse] | None = None
    timeout: float | None = None
    name: str = ""

    @classmethod
    def of_handler(cls, handler: Handler) -> Endpoint:
        """An endpoint that is a plain request handler (the gateway's own routes)."""
        return cls(method=handler)


class Meter(Protocol):
    """A route's telemetry, run by the pipeline's frame around all of its steps (see
    :class:`orchestro.gateway.route_meter.RouteMeter`): the frame reads the clock and sets
    the request context itself, inline, and calls :meth:`end` once."""

    cell: str
    instance: str
    telemetry: Any  # its ``recording`` says whether spans are recorded

    def begin(self, request: web.BaseRequest, start: float) -> None:
        """While spans are recorded: set the whole request context and start the span."""
        ...

    def end(
        self, request: web.BaseRequest, response: web.StreamResponse | None, start: float
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route's steps and endpoint, ready to run."""

    befores: tuple[Before, ...]
    afters: tuple[tuple[int, After], ...]  # (befores that must have run, hook), in run order
    endpoint: Endpoint
    meter: Meter | None = None
    admission: Admission | None = None


def compose(
    steps: Sequence[Step],
    route: Route,
    endpoint: Endpoint,
    meter: Meter | None = None,
    admission: Admission | None = None,
) -> CompiledRoute:
    """Compile ``steps`` (the first outermost) around ``endpoint`` for ``route``, measured
    by ``meter`` and let in by ``admission`` if given (both outside every step)."""
    hooks = [h for h in (step.hooks(route) for step in steps) if h is not None]
    befores = tuple(h.before for h in hooks if h.before is not None)
    # An after hook runs only if its step's before ran: count the befores up to its own.
    afters = tuple(
        (sum(1 for h in hooks[: i + 1] if h.before is not None), hook.after)
        for i, hook in enumerate(hooks)
        if hook.after is not None
    )[::-1]
    return CompiledRoute(befores, afters, endpoint, meter, admission)


class Pipeline:
    """The gateway's request handler: resolve the route, then run its steps and endpoint.

    The whole of a request — routing, steps, binding, the service call, rendering, error
    translation — runs in this one coroutine (plus the service method's own).
    """

    def __init__(
        self,
        router: Router[CompiledRoute],
        cell: str,
        not_found: CompiledRoute,
        not_allowed: Callable[[tuple[str, ...]], CompiledRoute],
    ) -> None:
        self._resolve = router.resolve
        self._cell = cell
        # Request ids: a random prefix per gateway and a counter. Unique without a system
        # call per request (os.urandom costs microseconds under load).
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = itertools.count(1)
        self._not_found = not_found
        self._not_allowed = not_allowed
        self._timer: DeadlineTimer | None = None  # the loop's, found on first use
        # What the connection handler counts: requests refused before they reached us.
        self.malformed = MalformedRequests(cell)
        # Every answer closes its connection (the server is draining: see ProblemServer).
        # Here rather than in a coroutine around each request: that one cost ~0.8 µs each.
        self.closing = False

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request.headers.get(REQUEST_ID_HEADER)
        if rid is None or not _safe_id(rid):
            rid = f"{self._id_prefix}{next(self._id_counter):012x}"
        request[REQUEST_ID_KEY] = rid
        path = request.raw_path
        if "?" in path:
            path = path.partition("?")[0]
        match = self._resolve(request.method, path)
        route = match.target
        if route is None:
            route = self._not_allowed(match.allowed) if match.allowed else self._not_found
        endpoint = route.endpoint
        meter = route.meter
        if meter is not None:
            start = _clock()
            if meter.telemetry.recording:
                meter.begin(request, start)
            else:
                # The request context in its cheap form, made whole only if something asks
                # for it. aiohttp serves each request in a task of its own, with a copy of
                # the context: the variable needs no reset afterwards.
                set_current((meter.cell, meter.instance, request, start))
        admission = route.admission
        admitted = False
        entered = 0
        response: web.StreamResponse | None = None
        try:
            if admission is not None:
                gate = admission.gate
                if not gate.admits or gate.in_flight >= admission.limit:
                    raise admission.refusal()
                gate.in_flight += 1
                gate.admitted += 1
                admitted = True
            for before in route.befores:
                waiting = before(request)
                if waiting is not None:
                    await waiting
                entered += 1
            # The caller's deadline (which nested calls inherit) or the service's timeout,
            # whichever comes first, enforced by the loop's deadline timer: inline, since a
            # coroutine or asyncio.timeout() here would cost every such request. Read before
            # the method's coroutine is made, so that a bad header leaves none unawaited.
            header = request.headers.get(DEADLINE_HEADER)
            when = None
            if header is not None:
                try:
                    when = parse_deadline(header)
                except InvalidDeadline as exc:
                    raise HTTPError(400, str(exc)) from None
                set_deadline(when)
            if endpoint.bind is not None:
                call = endpoint.method(**endpoint.bind(request, match.params))
            elif endpoint.bind_async is not None:
                call = endpoint.method(**(await endpoint.bind_async(request, match.params)))
            else:
                call = endpoint.method(request)
            own = False  # whether the service's own timeout comes first
            if endpoint.timeout is not None:
                limit = time.monotonic() + endpoint.timeout
                if when is None or limit < when:
                    when, own = limit, True
            if when is None:
                result = await call
            else:
                timer = self._timer
                if timer is None:
                    timer = self._timer = timer_for(asyncio.get_running_loop())
                task = asyncio.current_task()
                assert task is not None
                expiry = timer.start(when, task)
                try:
                    result = await call
                except asyncio.CancelledError:
                    if timer.expired(expiry):
                        raise _expired(endpoint, own) from None
                    raise
                finally:
                    timer.stop(expiry)
            response = result if endpoint.render is None else endpoint.render(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = error_response(request, exc, self._cell)
        finally:
            # Even on cancellation (with no response), so that what a `before` took is given
            # back.
            for needed, after in route.afters:
                if entered >= needed:
                    after(request, response)
            if admitted:
                gate.in_flight -= 1
            if meter is not None:
                meter.end(request, response, start)
        assert response is not None
        response.headers[REQUEST_ID_HEADER] = rid
        if self.closing or response.status == 408:
            # Draining; or a 408 (a body too slow, RFC 9110 §15.5.9): Connection: close.
            response.force_close()  # the header when not yet sent; the close in any case
        return response


def _expired(endpoint: Endpoint, own: bool) -> HTTPError:
    """The 504 for a service stopped at its own timeout, or at its caller's deadline."""
    if own:
        return HTTPError(
            504,
            f"service {endpoint.name!r} did not answer within its timeout of {endpoint.timeout} s",
        )
    return HTTPError(
        504,
        f"service {endpoint.name!r} did not answer before its caller's deadline",
        headers={EXPIRED_HEADER: "1"},
    )


def service_endpoint(
    op: OperationSpec, method: Callable[..., Awaitable[Any]], binder: Binder
) -> Endpoint:
    """The endpoint of a service: bind the arguments, call the method, render its answer."""
    return Endpoint(
        method=method,
        bind=None if binder.needs_body else binder.bind,
        bind_async=binder.bind_with_body if binder.needs_body else None,
        render=renderer(op),
        timeout=op.service.timeout,
        name=op.name,
    )
