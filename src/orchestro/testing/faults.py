"""Fault injection and a mock transport for the mesh: test how a cell copes with its
dependencies being slow, failing or gone, without breaking them for real.

```python
faults = FaultInjector()                       # wraps the real HTTP transport
async with Mesh("static://greeter=http://127.0.0.1:8081", transport=faults) as calls:
    faults.abort_with(503, cell="greeter")     # every call to greeter answers 503
    faults.latency(0.2, cell="greeter", operation="greet", rate=0.5)
    faults.error_rate(0.1, status=502)         # 10% of all calls answer 502
    faults.clear()
```

``follow(plan)`` adds a seeded schedule of kills, drops, errors and delays
(:class:`~orchestro.testing.FaultPlan`) that a failing test can replay from its seed.

Rules apply to calls that cross the transport; calls to a cell hosted in the same process take
the local path and are not faulted.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from ..errors import DeadlineExceeded, TransportError
from ..mesh.transports.base import CallRequest, CallResponse, Transport, with_tls
from ..mesh.transports.http import HttpTransport
from ..registry.base import Instance
from .chaos import Fault, FaultKind, FaultPlan

if TYPE_CHECKING:
    from ..security.tls import CellTLS

__all__ = ["FaultInjector", "MockTransport"]


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str  # latency | abort | disconnect
    rate: float
    cell: str | None
    operation: str | None
    seconds: float = 0.0
    status: int = 0
    url: str | None = None

    def matches(self, instance: Instance, request: CallRequest) -> bool:
        if self.cell is not None and instance.cell != self.cell:
            return False
        if self.url is not None and instance.url != self.url:
            return False
        return (
            self.operation is None
            or request.operation == self.operation
            or (request.path == self.operation)
        )


class FaultInjector:
    """A transport that adds latency, errors and disconnections before the real one.

    Rules match by target ``cell`` and by ``operation`` (a typed call's service name, or a raw
    call's path); ``rate`` is the share of matching calls affected. A seeded ``rng`` makes a
    test repeatable.
    """

    def __init__(self, transport: Transport | None = None, *, rng: random.Random | None = None):
        self.transport = transport or HttpTransport()
        self._rules: list[_Rule] = []
        self._rng = rng or random.Random(0)
        self.plan: FaultPlan | None = None
        self._injected = [0]  # shared with the injectors made by with_tls

    @property
    def injected(self) -> int:
        """Faults injected so far (by this injector and those :meth:`with_tls` made)."""
        return self._injected[0]

    def with_tls(self, tls: CellTLS) -> FaultInjector:
        """This injector for a cell proving itself with ``tls`` (see ``Mesh.bind``): the
        same rules, plan, random numbers and count, before a transport presenting ``tls``."""
        made = FaultInjector.__new__(FaultInjector)
        made.__dict__.update(self.__dict__)
        made.transport = with_tls(self.transport, tls)
        return made

    def follow(self, plan: FaultPlan) -> Self:
        """Apply a seeded :class:`FaultPlan` to every call, before the rules (one plan at a
        time: following another replaces it)."""
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"follow() takes a FaultPlan, not {plan!r}")
        self.plan = plan
        return self

    def latency(
        self, seconds: float, *, cell: str | None = None, operation: str | None = None,
        rate: float = 1.0,
    ) -> Self:  # fmt: skip
        """Delay matching calls by ``seconds`` (spent from the call's deadline)."""
        self._rules.append(_Rule("latency", rate, cell, operation, seconds=seconds))
        return self

    def error_rate(
        self, rate: float, *, status: int = 503, cell: str | None = None,
        operation: str | None = None,
    ) -> Self:  # fmt: skip
        """Answer a share ``rate`` of matching calls with ``status`` (problem+json)."""
        self._rules.append(_Rule("abort", rate, cell, operation, status=status))
        return self

    def abort_with(
        self, status: int, *, cell: str | None = None, operation: str | None = None
    ) -> Self:
        """Answer every matching call with ``status``."""
        return self.error_rate(1.0, status=status, cell=cell, operation=operation)

    def disconnect(
        self, *, cell: str | None = None, operation: str | None = None, rate: float = 1.0,
        url: str | None = None,
    ) -> Self:  # fmt: skip
        """Fail matching calls (or those to the instance at ``url``) as if the connection
        were refused."""
        self._rules.append(_Rule("disconnect", rate, cell, operation, url=url))
        return self

    def clear(self) -> None:
        """Remove the rules and the plan."""
        self._rules.clear()
        self.plan = None

    async def send(
        self,
        instance: Instance,
        request: CallRequest,
        seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> CallResponse:
        fault = self.plan.draw(instance) if self.plan is not None else None
        if fault is not None:
            self._injected[0] += 1
            if fault.kind is not FaultKind.DELAY:
                return await self._apply(fault, instance, request, seconds, headers)
            await asyncio.sleep(min(fault.seconds, seconds))
            if fault.seconds >= seconds:
                raise DeadlineExceeded(f"{instance.url}: delayed by the fault plan ({fault})")
            seconds -= fault.seconds  # then sent, with what is left of the deadline
        for rule in self._rules:
            if not rule.matches(instance, request) or self._rng.random() >= rule.rate:
                continue
            self._injected[0] += 1
            if rule.kind == "latency":
                await asyncio.sleep(min(rule.seconds, seconds))
                if rule.seconds >= seconds:
                    raise DeadlineExceeded(f"{instance.url}: injected latency of {rule.seconds} s")
            elif rule.kind == "disconnect":
                raise TransportError(f"{instance.url}: injected disconnection", connect=True)
            else:
                return _problem(rule.status, instance)
        return await self.transport.send(instance, request, seconds, headers)

    async def _apply(
        self,
        fault: Fault,
        instance: Instance,
        request: CallRequest,
        seconds: float,
        headers: Mapping[str, str] | None,
    ) -> CallResponse:
        """Inject a kill, refusal, drop or error."""
        if fault.kind in (FaultKind.KILL, FaultKind.REFUSED):
            raise TransportError(
                f"{instance.url}: instance killed by the fault plan ({fault})", connect=True
            )
        if fault.kind is FaultKind.DROP:
            # Sent and executed; only the answer is lost, as when a connection resets.
            await self.transport.send(instance, request, seconds, headers)
            raise TransportError(f"{instance.url}: answer dropped by the fault plan ({fault})")
        return _problem(fault.status, instance)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _problem(status: int, instance: Instance) -> CallResponse:
    body = {"type": "about:blank", "title": "Injected fault", "status": status,
            "detail": f"fault injected by the test for {instance.cell}"}  # fmt: skip
    return CallResponse(
        status, {"Content-Type": "application/problem+json"}, json.dumps(body).encode()
    )


Handler = Callable[[Instance, CallRequest], Any]


class MockTransport:
    """A transport answering from a function: no server at all.

    The handler gets the instance and the request and returns a :class:`CallResponse`, or any
    JSON-able value (answered with 200), or ``None`` (204); it may be a coroutine function.

    ```python
    def greeter(instance, request):
        return {"message": "Hello from a mock"}

    async with Mesh("static://greeter=http://mock", transport=MockTransport(greeter)) as m:
        ...
    ```
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[CallRequest] = []

    async def send(
        self,
        instance: Instance,
        request: CallRequest,
        seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> CallResponse:
        self.requests.append(request)
        answer = self._handler(instance, request)
        if isinstance(answer, Awaitable):
            try:
                async with asyncio.timeout(seconds):  # a transport keeps the deadline
                    answer = await answer
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    f"{instance.url} did not answer within {seconds:.3f} s"
                ) from exc
        if isinstance(answer, CallResponse):
            return answer
        if answer is None:
            return CallResponse(204, {}, b"")
        import pydantic_core

        return CallResponse(
            200, {"Content-Type": "application/json"}, pydantic_core.to_json(answer)
        )

    async def aclose(self) -> None:
        return None
