"""Rate limits: declarations checked at import, GCRA on a fake clock, a bounded table, and
429s with Retry-After and the RateLimit fields from a real gateway."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pydantic import BaseModel

from orchestro import Caller, CellDefinitionError, cell, service
from orchestro.cell.edge import UNLIMITED, RateLimit, parse_rate_limit
from orchestro.gateway.ratelimit import Limiter, caller_key
from orchestro.security.identity import CALLER_KEY, fixed_identity
from orchestro.testing import CellClient


class Ok(BaseModel):
    ok: bool = True


@pytest.mark.parametrize(
    ("text", "count", "window", "burst"),
    [
        ("100/s", 100, 1.0, 100),
        ("6000/min", 6000, 60.0, 6000),
        ("10/h", 10, 3600.0, 10),
        ("50/10s", 50, 10.0, 50),
        ("100/s burst 20", 100, 1.0, 20),
        ("100/s, burst=5", 100, 1.0, 5),
        (" 2 / minute ", 2, 60.0, 2),
    ],
)
def test_the_accepted_forms_parse(text: str, count: int, window: float, burst: int) -> None:
    limit = parse_rate_limit(text, "X.y")
    assert (limit.count, limit.window, limit.burst) == (count, window, burst)


@pytest.mark.parametrize("bad", ["100", "100/fortnight", "0/s", "1/s burst 0", "fast", 100, ""])
def test_a_bad_rate_limit_is_refused_at_decoration_naming_the_method_and_the_forms(
    bad: object,
) -> None:
    with pytest.raises(CellDefinitionError) as caught:

        @cell("bad-rate")
        class Bad:
            @service.get("/x", rate_limit=bad)  # type: ignore[arg-type]
            async def x(self) -> Ok:
                return Ok()

    message = str(caught.value)
    assert "Bad.x" in message
    assert f"rate_limit={bad!r}" in message
    assert "'100/s', '6000/min'" in message


def test_a_bad_cell_rate_limit_names_the_cell() -> None:
    with pytest.raises(CellDefinitionError, match=r"@cell\('bad-cell'\): rate_limit='9/eon'"):
        cell("bad-cell", rate_limit="9/eon")


def test_gcra_allows_the_burst_then_one_per_interval() -> None:
    limiter = Limiter(RateLimit(10, 1.0, 3), "t")  # 10/s, 3 at once
    now = 100.0
    assert [limiter.acquire("a", now) <= 0 for _ in range(4)] == [True, True, True, False]
    # Refused by one interval exactly; another caller is not affected.
    assert limiter.acquire("a", now) == pytest.approx(0.1)
    assert limiter.acquire("b", now) <= 0
    assert limiter.acquire("a", now + 0.1) <= 0  # one interval later: one more
    assert limiter.acquire("a", now + 0.1) > 0
    assert limiter.refused == 3
    # After an idle spell, the whole burst again (not more).
    later = now + 10
    assert [limiter.acquire("a", later) <= 0 for _ in range(4)] == [True, True, True, False]


def test_gcra_holds_the_sustained_rate_over_a_long_run() -> None:
    limiter = Limiter(RateLimit(100, 1.0, 10), "t")
    admitted = 0
    for step in range(10_000):  # a caller trying every 0.1 s, well under 100/s
        admitted += limiter.acquire("a", step * 0.1) <= 0
    assert admitted == 10_000
    flood = Limiter(RateLimit(100, 1.0, 10), "t")
    admitted = sum(flood.acquire("a", step * 0.001) <= 0 for step in range(10_000))  # 10 s
    assert admitted == 10 + 999  # the burst, then one each 10 ms up to 9.999 s


def test_remaining_counts_what_is_left_of_the_burst() -> None:
    limiter = Limiter(RateLimit(5, 1.0, 5), "t")
    left = [limiter.remaining(limiter.acquire("a", 1.0)) for _ in range(5)]
    assert left == [4, 3, 2, 1, 0]


def test_the_table_is_bounded_against_rotating_addresses() -> None:
    limiter = Limiter(RateLimit(1, 60.0, 1), "t", max_keys=1000)
    for i in range(50_000):  # every request from a new address, all still limited
        limiter.acquire(f"ip:{i}", 1.0)
    assert len(limiter) == 1000
    assert limiter.evicted == 49_000


def test_idle_callers_leave_the_table_without_evictions() -> None:
    limiter = Limiter(RateLimit(10, 1.0, 1), "t", max_keys=1000)
    now = 0.0
    for i in range(20_000):
        now += 0.01  # each caller's one request is forgotten 0.1 s later
        limiter.acquire(f"ip:{i}", now)
    assert len(limiter) <= 20  # about the callers of the last 0.1 s
    assert limiter.evicted == 0


def test_unlimited_needs_no_limiter() -> None:
    assert parse_rate_limit("unlimited", "x") is UNLIMITED
    with pytest.raises(ValueError, match="unlimited"):
        Limiter(UNLIMITED, "t")


@cell("limited", rate_limit="4/min")
class Limited:
    @service.get("/own", rate_limit="3/min")
    async def own(self) -> Ok:
        return Ok()

    @service.get("/a")
    async def a(self) -> Ok:
        return Ok()

    @service.get("/b")
    async def b(self) -> Ok:
        return Ok()

    @service.get("/free", rate_limit="unlimited")
    async def free(self) -> Ok:
        return Ok()

    @service.get("/who")
    async def who(self, caller: Caller) -> Ok:
        return Ok(ok=caller.cell == "teller")


async def test_a_burst_over_the_limit_gets_429_with_retry_after_and_ratelimit_fields() -> None:
    async with CellClient(Limited) as client:
        answers = [await client.get("/own") for _ in range(5)]
        assert [r.status for r in answers] == [200, 200, 200, 429, 429]
        first = answers[0].headers
        assert first["RateLimit-Policy"] == '"own";q=3;w=60'
        assert first["RateLimit"] == '"own";r=2;t=20'  # 2 left; whole again in 20 s
        refused = answers[3]
        assert refused.content_type == "application/problem+json"
        problem = refused.json()
        assert problem["status"] == 429
        assert "more than 3/min requests from this caller to 'own'" in problem["detail"]
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= 20
        assert refused.headers["RateLimit"] == f'"own";r=0;t={retry}'
        assert refused.headers["RateLimit-Policy"] == '"own";q=3;w=60'
        # Refusals are counted, by limit.
        metrics = (await client.get("/metrics")).text
    (sample,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("orchestro_gateway_rate_limited_total{")
        and 'orchestro_rate_limit="own"' in line
    ]
    assert 'orchestro_cell="limited"' in sample
    assert sample.endswith(" 2.0")


async def test_the_cell_limit_is_one_budget_for_its_services_and_unlimited_is_exempt() -> None:
    async with CellClient(Limited) as client:
        statuses = [(await client.get(path)).status for path in ("/a", "/b", "/a", "/b", "/a")]
        assert statuses == [200, 200, 200, 200, 429]
        assert (await client.get("/b")).headers["RateLimit-Policy"] == '"limited";q=4;w=60'
        free = await asyncio.gather(*(client.get("/free") for _ in range(20)))
        assert {r.status for r in free} == {200}
        assert "RateLimit" not in free[0].headers
        # The gateway's own routes are never limited.
        assert {(await client.get("/healthz")).status for _ in range(10)} == {200}


async def test_a_proven_cell_is_limited_by_its_name() -> None:
    async with CellClient(Limited, caller="teller") as client:
        statuses = [(await client.get("/who")).status for _ in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        assert (await client.get("/who")).json()["detail"].startswith("limited: more than 4/min")


def test_the_caller_key_is_the_cell_else_the_token_subject_else_the_address() -> None:
    request = from_peer("10.1.2.3")
    assert caller_key(request) == "10.1.2.3"
    request[CALLER_KEY] = Caller(subject="alice", scheme="jwt")
    assert caller_key(request) == "sub:jwt:alice"
    request[CALLER_KEY] = Caller(cell="teller", subject="alice", scheme="jwt")
    assert caller_key(request) == "cell:teller"
    assert caller_key(from_peer("10.1.2.3"), fixed_identity("vault")) == "cell:vault"
    # A forwarded-for header proves nothing: the connection's peer counts.
    forged = from_peer("10.1.2.3", {"X-Forwarded-For": "192.0.2.9"})
    assert caller_key(forged) == "10.1.2.3"


def from_peer(host: str, headers: dict[str, str] | None = None) -> web.BaseRequest:
    protocol = mock.Mock(peername=(host, 4242), sockname=("127.0.0.1", 80), ssl_context=None)
    return make_mocked_request("GET", "/", headers=headers, protocol=protocol)
