"""The cells the bed runs: ``backend`` on the backend hosts, ``front`` on the frontend host.

``front`` answers ``GET /work`` by calling ``backend`` through the mesh (discovery from etcd,
balancing, retries) and says which host served it, so the load generator sees where traffic
goes. The bed sets ``BED_HOST`` in each process's environment.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from orchestro import CallError, HTTPError, RemoteError, cell, mesh, service


class Served(BaseModel):
    host: str


@cell("backend", port=8081)
class Backend:
    @service.get("/work")
    async def work(self) -> Served:
        return Served(host=os.environ.get("BED_HOST", "?"))

    @service.get("/blob")
    async def blob(self, size: int = 65536) -> str:
        return "x" * min(size, 8 * 2**20)


@cell("front", port=8080)
class Front:
    backend = mesh.client(Backend)

    @service.get("/work")
    async def work(self) -> Served:
        try:
            return await self.backend.work()
        except RemoteError as exc:
            raise HTTPError(502, f"the backend answered {exc.status}") from exc
        except CallError as exc:
            raise HTTPError(
                503, f"the backend is unavailable: {type(exc).__name__}: {exc}"
            ) from exc
