"""pytest fixtures, registered through the ``pytest11`` entry point.

- ``cell_client``: ``client = await cell_client(Greeter)`` starts a :class:`CellClient`; every
  client it made is drained after the test. Needs pytest-asyncio.
- ``make_cell``: :func:`orchestro.testing.make_cell`.
- ``spans``: a :class:`CapturedSpans` recording every span finished during the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

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
