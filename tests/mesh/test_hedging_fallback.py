"""Hedged requests and fallbacks, with mock transports (no servers)."""

from __future__ import annotations

import asyncio

import pytest
from examples.hello import Greeter, Greeting

from orchestro import CallPolicy, ConfigurationError, Mesh, NoInstancesError, RemoteError
from orchestro.mesh.transports import CallRequest, CallResponse
from orchestro.registry import Instance
from orchestro.testing import FaultInjector, MockTransport

TWO = "static://greeter=http://slow.invalid:1,greeter=http://fast.invalid:2"


def slow_and_fast() -> MockTransport:
    async def answer(instance: Instance, request: CallRequest) -> dict[str, str]:
        if instance.host == "slow.invalid":
            await asyncio.sleep(2)
        return {"message": instance.host}

    return MockTransport(answer)


async def test_a_hedge_goes_to_another_instance_when_the_first_is_slow() -> None:
    policy = CallPolicy(hedge=True, hedge_delay=0.05, balancer="round-robin")
    async with Mesh(TWO, transport=slow_and_fast(), policy=policy) as calls:
        greeter = calls.client(Greeter)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = [(await greeter.greet()).message for _ in range(4)]
        assert loop.time() - started < 1.5  # never waited for the slow instance
        assert set(answers) == {"fast.invalid"}
        budget = calls.target_state("greeter").budget
        assert budget.balance < 100  # the hedges were paid from the retry budget


async def test_no_hedge_without_the_option_or_for_non_idempotent_calls() -> None:
    transport = slow_and_fast()
    policy = CallPolicy(hedge=False, balancer="round-robin", timeout=0.2, max_attempts=1)
    async with Mesh(TWO, transport=transport, policy=policy) as calls:
        raw = calls.client("greeter")
        results = await asyncio.gather(
            *(raw.get("/greet") for _ in range(2)), return_exceptions=True
        )
        assert sum(isinstance(r, Exception) for r in results) == 1  # the slow one timed out
    hedging = CallPolicy(hedge=True, hedge_delay=0.01, balancer="round-robin", timeout=0.2)
    transport = slow_and_fast()
    async with Mesh(TWO, transport=transport, policy=hedging) as calls:
        raw = calls.client("greeter")
        await asyncio.gather(
            *(raw.post("/greet", json={}) for _ in range(2)), return_exceptions=True
        )
        assert len(transport.requests) == 2  # POST: one request per call, never a backup


async def test_hedging_waits_for_history_before_guessing_a_percentile() -> None:
    calls_made = 0

    def answer(instance: Instance, request: CallRequest) -> dict[str, str]:
        nonlocal calls_made
        calls_made += 1
        return {"message": "hi"}

    async with Mesh(
        "static://greeter=http://a.invalid:1",
        transport=MockTransport(answer),
        policy=CallPolicy(hedge=True),
    ) as calls:
        for _ in range(30):
            await calls.client(Greeter).greet()
        target = calls.target_state("greeter")
        assert target.hedge_delay() is not None  # p95 of what it has seen
    assert calls_made == 30


async def test_fallback_answers_when_the_call_finally_fails() -> None:
    def friendly(error: Exception, **arguments: object) -> Greeting:
        return Greeting(message=f"Hello {arguments.get('name', 'you')} (greeter unavailable)")

    faults = FaultInjector(MockTransport(lambda i, r: {"message": "real"}))
    async with Mesh(
        "static://greeter=http://a.invalid:1", transport=faults, policy=CallPolicy(max_attempts=2)
    ) as calls:
        greeter = calls.client(Greeter, fallback={"greet": friendly})
        assert (await greeter.greet(name="Ada")).message == "real"
        faults.abort_with(503)
        assert (await greeter.greet(name="Ada")).message == "Hello Ada (greeter unavailable)"
        raw = calls.client("greeter")
        with pytest.raises(RemoteError):
            await raw.get("/greet")

        async def later(error: Exception) -> str:
            return f"fallback after {type(error).__name__}"

        assert await raw.get("/greet", fallback=later) == "fallback after RemoteError"
        with pytest.raises(ConfigurationError, match="fallback for unknown service"):
            calls.client(Greeter, fallback={"gret": friendly})


async def test_fallback_covers_no_instances() -> None:
    async with Mesh(
        "memory://",
        transport=MockTransport(lambda i, r: None),
        policy=CallPolicy(wait_for_instances=0),
    ) as calls:
        greeter = calls.client(Greeter, fallback={"greet": lambda e, **kw: Greeting(message="-")})
        assert (await greeter.greet()).message == "-"
        with pytest.raises(NoInstancesError):
            await calls.client(Greeter).greet()


def test_call_response_is_plain_data() -> None:
    assert CallResponse(200, {}, b"{}").status == 200
