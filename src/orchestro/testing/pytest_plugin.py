"""pytest fixtures, registered through the ``pytest11`` entry point.

- ``cell_client``: ``client = await cell_client(Greeter)`` starts a :class:`CellClient`; every
  client it made is drained after the test. Needs pytest-asyncio.
- ``make_cell``: :func:`orchestro.testing.make_cell`.
- ``spans``: a :class:`CapturedSpans` recording every span finished during the test.

With pytest-asyncio in its default *strict* mode an ``async def`` test runs only when marked
``@pytest.mark.asyncio``. So that a user's project needs no configuration, this plugin marks
the async tests that use orchestro — that request one of its fixtures, or live in a module
that imports from ``orchestro`` or imports a cell — when they are not marked already. In
``auto`` mode pytest-asyncio marks every async test itself, and this changes nothing.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from ..cell.spec import CELL_ATTR
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


_FIXTURES = frozenset({"cell_client", "make_cell", "spans"})
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
