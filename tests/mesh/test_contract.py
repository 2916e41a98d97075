"""One contract for both transports: a typed call to a cell in this process behaves as the
same call over HTTP (issue 13.7) — validation, admission, errors, deadlines, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ValidationError

from orchestro import (
    CallPolicy,
    DeadlineExceeded,
    Header,
    HTTPError,
    Mesh,
    RemoteError,
    RetryBudgetExhausted,
    cell,
    service,
)
from orchestro.config import GatewaySettings
from orchestro.host import CellHost
from orchestro.registry import Registration, RegistryView
from orchestro.registry.memory import MemoryRegistry


class Note(BaseModel):
    text: str
    tags: list[str] = []


@cell("notes")
class Notes:
    def __init__(self) -> None:
        self.kept = Note(text="kept", tags=["a"])
        self.calls = 0
        self.release: asyncio.Event | None = None

    @service.get("/notes/{n}")
    async def get(
        self, n: int, tag: str | None = None, limit: Annotated[int, Header()] = 10
    ) -> Note:
        self.calls += 1
        return Note(text=f"note {n}", tags=[tag or "-", str(limit)])

    @service.post("/notes")
    async def add(self, note: Note) -> Note:
        self.calls += 1
        note.tags.append("seen")  # a callee changing its argument
        return note

    @service.get("/kept")
    async def kept_note(self) -> Note:
        return self.kept  # its own object: the caller must get a copy

    @service.get("/fail/{status}")
    async def fail(self, status: int) -> None:
        raise HTTPError(status, f"failing with {status}")

    @service.get("/boom")
    async def boom(self) -> None:
        raise ValueError("a bug")

    @service.get("/slow")
    async def slow(self) -> None:
        await asyncio.sleep(5)

    @service.get("/hold")
    async def hold(self) -> None:
        assert self.release is not None
        await self.release.wait()


@dataclass
class Setup:
    kind: str
    calls: Mesh
    host: CellHost
    notes: Notes

    def stub(self, **policy: Any) -> Any:
        return self.calls.client(Notes, policy=CallPolicy(**policy) if policy else None)


@pytest.fixture(params=["local", "http"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    registry = MemoryRegistry(ttl=30)
    registration = Registration(registry)
    view = RegistryView(registry)
    calls = Mesh(view)
    await calls.start()
    notes = Notes()
    local = request.param == "local"
    host = CellHost(
        notes,
        settings=GatewaySettings(max_concurrency=1),
        host="127.0.0.1",
        port=0,
        registration=None if local else registration,
        mesh=calls if local else None,  # attached: typed calls from this mesh stay in process
    )
    await host.start()
    if not local:
        async with asyncio.timeout(10):
            await view.wait_for(lambda v: bool(v.ready("notes")))
    try:
        yield Setup(request.param, calls, host, notes)
    finally:
        await host.drain()
        await registration.aclose()
        await calls.aclose()
        await view.aclose()


async def test_the_call_takes_the_transport_under_test(setup: Setup) -> None:
    assert await setup.stub().get(3, tag="x", limit=5) == Note(text="note 3", tags=["x", "5"])
    went_local = setup.calls.target_state("notes") is None  # no HTTP pipeline state
    assert went_local == (setup.kind == "local")


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.get("three"),  # path
        lambda stub: stub.get(3, limit="many"),  # header
        lambda stub: stub.get(3, tag=["a", "b"]),  # query
        lambda stub: stub.add({"text": 5}),  # body
    ],
    ids=["path", "header", "query", "body"],
)
async def test_invalid_arguments_fail_before_anything_is_sent(setup: Setup, call: Any) -> None:
    with pytest.raises(ValidationError):
        await call(setup.stub())
    assert setup.notes.calls == 0


async def test_errors_are_remote_errors_with_the_callee_problem(setup: Setup) -> None:
    with pytest.raises(RemoteError) as info:
        await setup.stub().fail(404)
    assert info.value.status == 404
    problem = info.value.problem
    assert (problem["status"], problem["title"], problem["detail"]) == (
        404,
        "Not Found",
        "failing with 404",
    )
    with pytest.raises(RemoteError) as failed:
        await setup.stub().boom()
    assert failed.value.status == 500
    assert failed.value.problem["title"] == "Internal Server Error"


async def test_the_deadline_stops_the_call(setup: Setup) -> None:
    with pytest.raises(DeadlineExceeded):
        await setup.stub(timeout=0.2).slow()
    async with asyncio.timeout(10):  # the callee stops too (over HTTP: at the deadline it
        while setup.host.gate.in_flight:  # was sent, within a timer slot of the caller)
            await asyncio.sleep(0.01)


async def test_admission_refuses_beyond_max_concurrency(setup: Setup) -> None:
    setup.notes.release = asyncio.Event()
    held = asyncio.create_task(setup.stub().hold())
    async with asyncio.timeout(10):
        while setup.host.gate.in_flight < 1:
            await asyncio.sleep(0.01)
    # Refused unprocessed with Retry-After: 1; a 0.5 s deadline leaves no time to resend.
    with pytest.raises(DeadlineExceeded) as info:
        await setup.stub(timeout=0.5).get(1)
    refusal = info.value.__cause__
    assert isinstance(refusal, RemoteError)
    assert refusal.status == 503
    assert refusal.problem["_unprocessed"] is True
    assert "limit of 1 concurrent requests" in refusal.problem["detail"]
    assert setup.notes.calls == 0
    setup.notes.release.set()
    await held
    assert await setup.stub().get(1) == Note(text="note 1", tags=["-", "10"])


async def test_resends_at_admission_are_paid_from_the_retry_budget(setup: Setup) -> None:
    setup.notes.release = asyncio.Event()
    held = asyncio.create_task(setup.stub().hold())
    async with asyncio.timeout(10):
        while setup.host.gate.in_flight < 1:
            await asyncio.sleep(0.01)
    # No budget at all: the refusal at max_concurrency is not resent (locally it used to
    # wait for a free slot however long the deadline, paying nothing).
    broke = setup.stub(retry_budget_ratio=0, retry_budget_min_per_second=0, timeout=30)
    async with asyncio.timeout(10):
        with pytest.raises(RetryBudgetExhausted) as info:
            await broke.get(1)
    assert "the retry budget is spent" in str(info.value)
    assert setup.notes.calls == 0
    setup.notes.release.set()
    await held


async def test_neither_side_can_change_the_other_s_objects(setup: Setup) -> None:
    mine = Note(text="hi", tags=[])
    answer = await setup.stub().add(mine)
    assert answer.tags == ["seen"]
    assert mine.tags == []  # the callee changed its copy
    kept = await setup.stub().kept_note()
    kept.tags.append("changed by the caller")
    assert setup.notes.kept.tags == ["a"]  # the caller changed its copy


async def test_a_call_waiting_on_a_draining_host_in_process_goes_to_another_instance() -> None:
    """A typed call queued at a co-hosted cell's max_concurrency, when that host starts to
    drain, is made over the network to another instance of the cell, as an HTTP call
    refused unprocessed would be; not failed with the draining host's 503."""
    registry = MemoryRegistry(ttl=30)
    registration = Registration(registry)
    view = RegistryView(registry)
    calls = Mesh(view)
    await calls.start()
    here, there = Notes(), Notes()
    local = CellHost(
        here,
        settings=GatewaySettings(max_concurrency=1),
        host="127.0.0.1",
        port=0,
        registration=registration,
        mesh=calls,  # attached: this mesh's typed calls go to it in process
    )
    remote = CellHost(there, host="127.0.0.1", port=0, registration=registration)
    await local.start()
    await remote.start()
    try:
        async with asyncio.timeout(10):
            await view.wait_for(lambda v: len(v.ready("notes")) == 2)
        here.release = asyncio.Event()
        stub = calls.client(Notes)
        held = asyncio.create_task(stub.hold())  # in process: fills the local host
        async with asyncio.timeout(10):
            while local.gate.in_flight < 1:
                await asyncio.sleep(0.01)
        queued = asyncio.create_task(stub.get(7))  # waits at the local host's admission
        await asyncio.sleep(0.1)
        assert not queued.done()
        draining = asyncio.create_task(local.drain())  # waits for the held call
        async with asyncio.timeout(10):
            assert await queued == Note(text="note 7", tags=["-", "10"])
        assert (here.calls, there.calls) == (0, 1)
        here.release.set()
        await held
        await draining
    finally:
        await local.drain()
        await remote.drain()
        await registration.aclose()
        await calls.aclose()
        await view.aclose()
