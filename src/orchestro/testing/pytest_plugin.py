"""pytest fixtures, registered through the ``pytest11`` entry point.

- ``cell_client``: ``client = await cell_client(Greeter)`` starts a :class:`CellClient`; every
  client it made is drained after the test. Needs pytest-asyncio.
- ``make_cell``: :func:`orchestro.testing.make_cell`.
- ``spans``: a :class:`CapturedSpans` recording every span finished during the test.
- ``fault_plan``: ``plan = fault_plan(Phase(error=0.1))`` makes a :class:`FaultPlan`; a plan
  given no seed takes ``--orchestro-seed`` or a random one, and when the test fails its
  report (the seed to replay it with, the faults injected) is printed with the failure.

With pytest-asyncio in its default *strict* mode an ``async def`` test runs only when marked
``@pytest.mark.asyncio``. So that a user's project needs no configuration, this plugin marks
the async tests that use orchestro — that request one of its fixtures, or live in a module
that imports from ``orchestro`` or imports a cell — when they are not marked already. In
``auto`` mode pytest-asyncio marks every async test itself, and this changes nothing.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator, Iterator
from typing import Any

import pytest

from ..cell.spec import CELL_ATTR
from .chaos import FaultPlan, Phase
from .client import CellClient
from .factory import make_cell as _make_cell
from .telemetry import CapturedSpans

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixture needs pytest-asyncio
    HAVE_PYTEST_ASYNCIO = False
else:
    HAVE_PYTEST_ASYNCIO = True


@pytest.fixture
def make_cell() -> Callable[..., Any]:
    """:func:`orchestro.testing.make_cell` as a fixture."""
    return _make_cell


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    """The spans finished during the test (recorded in full while the test runs)."""
    with CapturedSpans() as captured:
        yield captured


_PLANS = pytest.StashKey[list[FaultPlan]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("orchestro").addoption(
        "--orchestro-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of the fault plans made by the fault_plan fixture without one (replay a "
        "failure with the seed it printed)",
    )


@pytest.fixture
def fault_plan(request: pytest.FixtureRequest) -> Callable[..., FaultPlan]:
    """Make :class:`FaultPlan` s whose report is printed when the test fails."""
    plans = request.node.stash.setdefault(_PLANS, [])

    def make(
        *phases: Phase, seed: int | None = None, cells: Collection[str] | None = None
    ) -> FaultPlan:
        if seed is None:
            seed = request.config.getoption("orchestro_seed")
        plan = FaultPlan(*phases, seed=seed, cells=cells)
        plans.append(plan)
        return plan

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the report of every fault plan of a failed test to its failure output."""
    report = yield
    plans = item.stash.get(_PLANS, [])
    if report.failed and plans:
        for plan in plans:
            report.sections.append(("orchestro fault plan", plan.report()))
    return report


if HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def cell_client() -> AsyncIterator[Callable[..., Awaitable[CellClient]]]:
        """A factory of started :class:`CellClient` s, drained after the test."""
        clients: list[CellClient] = []

        async def start(cell: Any, **options: Any) -> CellClient:
            client = CellClient(cell, **options)
            await client.start()
            clients.append(client)
            return client

        yield start
        for client in reversed(clients):
            await client.aclose()


_FIXTURES = frozenset({"cell_client", "fault_plan", "make_cell", "spans"})
_RUNNERS = frozenset({"asyncio", "anyio", "trio"})

if HAVE_PYTEST_ASYNCIO:

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
        """Mark an async test that uses orchestro with ``asyncio`` before pytest-asyncio looks
        for the mark (it turns the item into one it runs, around this hook)."""
        if not (inspect.iscoroutinefunction(obj) and _uses_orchestro(obj)):
            return
        if not isinstance(collector, pytest.Module | pytest.Class):
            return
        if not collector.istestfunction(obj, name):
            return
        # Marked already, here or on its class or module, for asyncio or another runner
        # (anyio, trio): leave it to that.
        names = {getattr(mark, "name", None) for mark in getattr(obj, "pytestmark", [])}
        names.update(mark.name for mark in collector.iter_markers())
        if not names & _RUNNERS:
            pytest.mark.asyncio(obj)


def _uses_orchestro(func: Any) -> bool:
    try:
        if _FIXTURES.intersection(inspect.signature(func).parameters):
            return True
    except (TypeError, ValueError):  # pragma: no cover - no signature to read
        pass
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    namespace = vars(module) if module is not None else getattr(func, "__globals__", {})
    return any(_is_orchestros(value) for value in list(namespace.values()))


def _is_orchestros(value: object) -> bool:
    """Whether ``value`` is part of orchestro (a module, class or function) or a cell."""
    if isinstance(value, str | int | float | bool | bytes | None):
        return False
    if isinstance(value, type) and CELL_ATTR in value.__dict__:
        return True
    module = getattr(value, "__module__", None) or getattr(value, "__name__", None)
    return isinstance(module, str) and module.partition(".")[0] == "orchestro"
