"""The inbound pipeline's steps, each on its own, and their composition."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from orchestro import HTTPError, cell, service, spec_of
from orchestro.gateway.admission import Admission, Gate
from orchestro.gateway.pipeline import (
    CompiledRoute,
    Endpoint,
    Hooks,
    Pipeline,
    Route,
    compose,
)
from orchestro.gateway.problem import REQUEST_ID_KEY, error_response
from orchestro.gateway.router import Router
from orchestro.gateway.steps import AccessStep
from orchestro.security import ANONYMOUS, Caller, fixed_identity
from orchestro.security.identity import CALLER_KEY


@cell("steps")
class Steps:
    @service.get("/public")
    async def public(self) -> None: ...

    @service.get("/private", internal=True)
    async def private(self) -> None: ...


SPEC = spec_of(Steps)
PUBLIC = Route(SPEC, "/public", SPEC.operation("public"))
PRIVATE = Route(SPEC, "/private", SPEC.operation("private"))
SYSTEM = Route(SPEC, "/healthz")


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def serve(compiled: CompiledRoute, path: str = "/public") -> Pipeline:
    """A pipeline whose only route is GET ``path``."""
    router: Router[CompiledRoute] = Router()
    router.add("GET", path, compiled)
    router.freeze()
    missing = compose([], SYSTEM, Endpoint.of_handler(ok))
    return Pipeline(router, "steps", not_found=missing, not_allowed=lambda allowed: missing)


def get(path: str = "/public", **headers: str) -> web.Request:
    return make_mocked_request("GET", path, headers=headers)


class Recorder:
    """A step that records when its hooks run; optionally refuses in `before`."""

    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    def hooks(self, route: Route) -> Hooks:
        def before(request: web.Request) -> None:
            self.log.append(f"{self.name}.before")
            if self.refuse:
                raise HTTPError(429, "slow down")

        def after(request: web.Request, response: web.StreamResponse | None) -> None:
            self.log.append(f"{self.name}.after:{response.status if response else None}")

        return Hooks(before, after)


async def test_compose_runs_befores_in_order_and_afters_in_reverse() -> None:
    log: list[str] = []
    handler = serve(
        compose([Recorder("a", log), Recorder("b", log)], PUBLIC, Endpoint.of_handler(ok))
    )
    assert (await handler(get())).status == 200
    assert log == ["a.before", "b.before", "b.after:200", "a.after:200"]


async def test_a_refusing_step_answers_and_only_entered_steps_see_it() -> None:
    log: list[str] = []
    steps = [Recorder("a", log), Recorder("b", log, refuse=True), Recorder("c", log)]
    response = await serve(compose(steps, PUBLIC, Endpoint.of_handler(ok)))(get())
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    assert log == ["a.before", "b.before", "a.after:429"]


async def test_cancellation_still_runs_afters_with_no_response() -> None:
    log: list[str] = []

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    task = asyncio.create_task(
        serve(compose([Recorder("a", log)], PUBLIC, Endpoint.of_handler(hang)))(get())
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["a.before", "a.after:None"]


async def test_the_frame_sets_and_echoes_request_ids() -> None:
    handler = serve(compose([], PUBLIC, Endpoint.of_handler(ok)))
    request = get(**{"x-request-id": "abc"})
    response = await handler(request)
    assert request[REQUEST_ID_KEY] == "abc"
    assert response.headers["x-request-id"] == "abc"
    fresh = get(**{"x-request-id": "bad id"})
    assert (await handler(fresh)).headers["x-request-id"] != "bad id"
    assert len(fresh[REQUEST_ID_KEY]) == 24


def test_error_response_translates_each_kind() -> None:
    request = get()
    request[REQUEST_ID_KEY] = "r1"
    conflict = error_response(request, HTTPError(409, "taken"), "steps")
    assert (conflict.status, conflict.content_type) == (409, "application/problem+json")
    gone = error_response(request, web.HTTPGone(), "steps")
    assert gone.status == 410
    assert gone.content_type == "application/problem+json"
    moved = error_response(request, web.HTTPFound("/x"), "steps")
    assert (moved.status, moved.headers["Location"]) == (302, "/x")
    crash = error_response(request, KeyError("k"), "steps")
    assert crash.status == 500
    assert isinstance(crash, web.Response)
    assert b"request id r1" in (crash.body or b"")


async def test_admission_follows_the_gate_and_counts() -> None:
    gate = Gate()
    release = asyncio.Event()
    seen: list[int] = []

    async def held(request: web.Request) -> web.StreamResponse:
        seen.append(gate.in_flight)
        await release.wait()
        return web.Response(text="ok")

    log: list[str] = []
    handler = serve(
        compose(
            [Recorder("a", log)],
            PUBLIC,
            Endpoint.of_handler(held),
            admission=Admission(gate, "steps", max_concurrency=1),
        )
    )
    starting = await handler(get())
    assert starting.status == 503
    assert starting.headers["Retry-After"] == "1"
    assert b"cell 'steps' is starting" in starting.body  # type: ignore[operator]
    assert log == []  # refused before every step
    gate.open()
    first = asyncio.create_task(handler(get()))
    await asyncio.sleep(0)
    assert seen == [1]
    busy = await handler(get())
    assert busy.status == 503
    assert b"limit of 1 concurrent requests" in busy.body  # type: ignore[operator]
    release.set()
    assert (await first).status == 200
    assert (gate.in_flight, gate.admitted) == (0, 1)
    gate.close("draining")
    draining = await handler(get())
    assert b"is draining" in draining.body  # type: ignore[operator]
    assert gate.in_flight == 0


async def test_admission_counts_a_cancelled_request_out() -> None:
    gate = Gate()
    gate.open()

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    handler = serve(
        compose([], PUBLIC, Endpoint.of_handler(hang), admission=Admission(gate, "steps"))
    )
    task = asyncio.create_task(handler(get()))
    await asyncio.sleep(0)
    assert gate.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.in_flight == 0


def test_steps_skip_routes_they_do_not_apply_to() -> None:
    # Gateway paths bypass access: nothing runs for them.
    assert AccessStep(fixed_identity("x")).hooks(SYSTEM) is None


def test_access_step_guards_internal_services_only() -> None:
    assert AccessStep(lambda r: ANONYMOUS).hooks(PUBLIC) is None  # public: nothing to check

    private = AccessStep(lambda r: ANONYMOUS).hooks(PRIVATE)
    assert private is not None
    assert private.before is not None
    with pytest.raises(HTTPError) as info:
        private.before(get("/private"))
    assert info.value.status == 403

    as_cell = AccessStep(fixed_identity("billing")).hooks(PRIVATE)
    assert as_cell is not None
    assert as_cell.before is not None
    request = get("/private")
    as_cell.before(request)
    assert request[CALLER_KEY] == Caller("billing")
    assert str(Caller("billing")) == "cell 'billing'"
    assert str(ANONYMOUS) == "an anonymous caller"
