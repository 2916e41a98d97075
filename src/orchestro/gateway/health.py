"""The gateway's own endpoints: liveness, readiness and the OpenAPI document.

- ``/healthz`` answers 200 while the process can serve HTTP at all (liveness);
  ``/healthz?load`` adds the load a replica reports to its controller (in-flight requests,
  requests admitted so far, CPU seconds used).
- ``/readyz`` answers 200 only while the cell takes requests; 503 while it starts or drains,
  so load balancers and orchestrators send it nothing then (readiness).
- ``/openapi.json`` is the document built at start-up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from aiohttp import web

from ..cell.spec import CellSpec
from ..errors import HTTPError
from .admission import Gate
from .pipeline import Handler

__all__ = ["health_handlers"]


def health_handlers(
    spec: CellSpec,
    gate: Gate,
    openapi: bytes,
    load: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Handler]:
    name = spec.name
    alive = json.dumps({"status": "ok", "cell": name}).encode()
    ready = json.dumps({"status": "ready", "cell": name}).encode()

    async def healthz(request: web.BaseRequest) -> web.StreamResponse:
        if "load" in request.query:
            # The controller's ping: health and load report in one answer.
            report = {
                "status": "ok",
                "cell": name,
                "ready": gate.is_open,
                "in_flight": gate.in_flight,
                "admitted": gate.admitted,
                "cpu": sum(os.times()[:2]),
                **(load() if load is not None else {}),
            }
            return web.Response(body=json.dumps(report).encode(), content_type="application/json")
        return web.Response(body=alive, content_type="application/json")

    async def readyz(request: web.BaseRequest) -> web.StreamResponse:
        if not gate.is_open:
            raise HTTPError(503, f"cell {name!r} is {gate.reason}", headers={"Retry-After": "1"})
        return web.Response(body=ready, content_type="application/json")

    async def openapi_json(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=openapi, content_type="application/json")

    return {"/healthz": healthz, "/readyz": readyz, "/openapi.json": openapi_json}
