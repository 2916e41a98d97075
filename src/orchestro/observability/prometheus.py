"""Prometheus's ``/metrics`` of each cell (the ``http_sd`` targets of every cell are in
:mod:`orchestro.registry.prometheus_sd`).

``/metrics`` answers the Prometheus text format, or OpenMetrics when the scraper asks for it
in ``Accept``. A process hosting several cells serves each cell's series (those with an
``orchestro_cell`` label naming it) on that cell's port, and the process's own series
(CPU, memory, metrics without a cell) on its first cell's port only: a scrape of every
instance counts each series once.

A scrape is rendered off the event loop, in a thread: rendering costs ~30 µs of CPU per
sample (``prometheus_client``'s encoder: a cell with 100 series of request durations is
~3,400 samples, ~0.1 s), which on the loop would stall every request for as long. Scrapes that
arrive while one renders share its result (one render at a time per cell and format).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric as Family

from .telemetry import Telemetry

__all__ = ["CELL_LABEL", "exposition", "metrics_handler"]

CELL_LABEL = "orchestro_cell"


class _CellView:
    """The families of a registry as one cell's instance exposes them (see module doc)."""

    def __init__(self, registry: CollectorRegistry, cell: str, primary: bool) -> None:
        self._registry = registry
        self._cell = cell
        self._primary = primary

    def collect(self) -> Iterator[Family]:
        cell, primary = self._cell, self._primary
        for family in self._registry.collect():
            if family.name == "target":  # target_info describes every target
                yield family
                continue
            samples = [
                s
                for s in family.samples
                if (s.labels[CELL_LABEL] == cell if CELL_LABEL in s.labels else primary)
            ]
            if samples:
                family.samples = samples
                yield family


def exposition(request: web.BaseRequest, source: Any) -> web.Response:
    """``source``'s metrics (anything with ``collect()``) in the format ``Accept`` asks for:
    OpenMetrics, or the Prometheus text format."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(source), headers={"Content-Type": content_type})


def metrics_handler(telemetry: Telemetry, cell: str) -> Callable[[web.BaseRequest], Any]:
    # The render in progress per content type: later scrapes wait for it (single flight).
    rendering: dict[str, asyncio.Future[bytes]] = {}

    async def metrics(request: web.BaseRequest) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        found = rendering.get(content_type)
        if found is None:
            primary = telemetry.primary_cell in (None, cell)
            view = _CellView(telemetry.registry, cell, primary)
            loop = asyncio.get_running_loop()
            found = rendering[content_type] = loop.run_in_executor(None, encoder, view)
            found.add_done_callback(lambda _: rendering.pop(content_type, None))
        body = await asyncio.shield(found)  # a scraper that leaves cancels no one else
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics
