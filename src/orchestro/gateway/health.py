"""The gateway's own endpoints: liveness, readiness and the OpenAPI document.

- ``/healthz`` answers 200 while the process can serve HTTP at all (liveness).
- ``/readyz`` answers 200 only while the cell takes requests; 503 while it starts or drains,
  so load balancers and orchestrators send it nothing then (readiness).
- ``/openapi.json`` is the document built at start-up.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..cell.spec import CellSpec
from ..errors import HTTPError
from .pipeline import Handler
from .steps import Gate

__all__ = ["health_handlers"]


def health_handlers(spec: CellSpec, gate: Gate, openapi: bytes) -> dict[str, Handler]:
    name = spec.name
    alive = json.dumps({"status": "ok", "cell": name}).encode()
    ready = json.dumps({"status": "ready", "cell": name}).encode()

    async def healthz(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=alive, content_type="application/json")

    async def readyz(request: web.BaseRequest) -> web.StreamResponse:
        if not gate.is_open:
            raise HTTPError(503, f"cell {name!r} is {gate.reason}", headers={"Retry-After": "1"})
        return web.Response(body=ready, content_type="application/json")

    async def openapi_json(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=openapi, content_type="application/json")

    return {"/healthz": healthz, "/readyz": readyz, "/openapi.json": openapi_json}
