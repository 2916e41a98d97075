"""The in-memory view of the registry every process keeps, fed by a watch.

Resolving a cell is a dictionary lookup; it never waits on the registry. When the registry
cannot be reached the view keeps its last good contents, logs one warning naming the URL,
and retries with backoff until it can watch again. The watch runs under a
:class:`~orchestro.background.Background`: anything unexpected (a bug, a listener that
raised) is logged with its traceback, counted in ``orchestro.background.failures`` and the
watch started again, so a view never stops following the registry silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from ..background import Background, exponential
from ..errors import DiscoveryError
from .base import Instance, Registry

__all__ = ["RegistryView"]

_log = logging.getLogger("orchestro.registry")

_EMPTY: tuple[Instance, ...] = ()


class RegistryView:
    """A live copy of the registry, grouped by cell.

    ```python
    async with RegistryView(registry) as view:
        await view.wait_ready()
        for instance in view.ready("orders"):
            print(instance.url)
    ```
    """

    def __init__(self, registry: Registry, *, max_backoff: float = 5.0) -> None:
        self.registry = registry
        self._by_cell: dict[str, tuple[Instance, ...]] = {}
        self._ready_by_cell: dict[str, tuple[Instance, ...]] = {}
        self._max_backoff = max_backoff
        self._tasks: Background | None = None
        self._loaded = asyncio.Event()
        self._changed = asyncio.Condition()
        self._listeners: list[Callable[[dict[str, tuple[Instance, ...]]], None]] = []
        self.healthy = False

    def instances(self, cell: str) -> tuple[Instance, ...]:
        """Every known instance of ``cell`` (ready and draining)."""
        return self._by_cell.get(cell, _EMPTY)

    def ready(self, cell: str) -> tuple[Instance, ...]:
        """The instances of ``cell`` that take requests."""
        return self._ready_by_cell.get(cell, _EMPTY)

    def cells(self) -> dict[str, tuple[Instance, ...]]:
        return dict(self._by_cell)

    @property
    def loaded(self) -> bool:
        """Whether the first full snapshot arrived."""
        return self._loaded.is_set()

    def on_change(self, listener: Callable[[dict[str, tuple[Instance, ...]]], None]) -> None:
        """Call ``listener`` with the new contents after every change."""
        self._listeners.append(listener)

    def off_change(self, listener: Callable[[dict[str, tuple[Instance, ...]]], None]) -> None:
        """Stop calling ``listener`` (given to :meth:`on_change`)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def start(self) -> None:
        """Open the registry if it has something to open (a local:// file: a bad path or a
        corrupt file is reported here, as a ConfigurationError), then follow its watch."""
        if self._tasks is None:
            opener = getattr(self.registry, "open", None)
            if opener is not None:
                await opener()
            self._tasks = Background("registry-view")
            self._tasks.start("watch", self._follow)

    async def wait_ready(self) -> None:
        """Wait until the first full snapshot arrived (bound it with ``asyncio.timeout``)."""
        await self._loaded.wait()

    async def wait_for(self, predicate: Callable[[RegistryView], bool]) -> None:
        """Wait until ``predicate(view)`` holds (bound it with ``asyncio.timeout``)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    @property
    def background(self) -> Background | None:
        """The view's supervised tasks (its watch), once started."""
        return self._tasks

    async def aclose(self) -> None:
        if self._tasks is not None:
            await self._tasks.aclose()
            self._tasks = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _follow(self) -> None:
        """Follow the watch; an unreachable registry is expected and retried here, anything
        else propagates to the Background, which logs, counts and restarts this loop."""
        failures = 0
        while True:
            try:
                async for snapshot in self.registry.watch():
                    if not self.healthy and failures:
                        _log.warning("registry %s reachable again", self.registry.url)
                    failures = 0
                    self.healthy = True
                    await self._apply(snapshot)
                return  # the registry closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                if not isinstance(exc, DiscoveryError | OSError | TimeoutError):
                    raise  # a bug, not an outage: the Background's to report and restart
                if failures == 0:
                    _log.warning(
                        "registry %s unreachable (%s); serving the last known instances and "
                        "retrying",
                        self.registry.url,
                        exc,
                    )
                failures += 1
                # Full jitter, as tenacity's wait_random_exponential: spread reconnections.
                await asyncio.sleep(
                    random.uniform(0, exponential(failures + 1, 0.1, self._max_backoff))
                )

    async def _apply(self, snapshot: Sequence[Instance]) -> None:
        by_cell: dict[str, list[Instance]] = {}
        for instance in snapshot:
            by_cell.setdefault(instance.cell, []).append(instance)
        old, old_ready = self._by_cell, self._ready_by_cell
        frozen: dict[str, tuple[Instance, ...]] = {}
        ready_by_cell: dict[str, tuple[Instance, ...]] = {}
        for cell, found in by_cell.items():
            found.sort(key=lambda i: i.id)
            instances = tuple(found)
            before = old.get(cell)
            # A cell that did not change keeps its tuples: readers (the mesh) index a tuple
            # once and re-index only when it is replaced.
            if before is not None and _same(before, instances):
                frozen[cell] = before
                if cell in old_ready:
                    ready_by_cell[cell] = old_ready[cell]
                continue
            frozen[cell] = instances
            ready = tuple(i for i in instances if i.ready)
            if ready:
                ready_by_cell[cell] = ready
        self._by_cell = frozen
        self._ready_by_cell = ready_by_cell
        self._loaded.set()
        for listener in self._listeners:
            listener(frozen)
        async with self._changed:
            self._changed.notify_all()


def _same(a: tuple[Instance, ...], b: tuple[Instance, ...]) -> bool:
    """Whether two sorted lists of a cell's instances hold the same records."""
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))
