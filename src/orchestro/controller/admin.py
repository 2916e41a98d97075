"""The controller's admin API, on loopback only, and how the CLI finds it.

```
GET  /cells                      every cell: desired vs actual replicas, each replica's state
GET  /events?since=SEQ           recent events (scale, restart, back-off, drain, health)
GET  /events?follow              the events as they happen (one JSON object per line)
GET  /metrics                    the controller's metrics (replicas desired/actual/ready, events)
POST /cells/{cell}/scale         {"replicas": N}: set desired replicas (within min..max)
POST /cells/{cell}/replicas/{i}/restart
```

Each controller writes ``controllers/<pid>.json`` (its admin URL) next to the local registry
(``$XDG_RUNTIME_DIR/orchestro/``), which ``python -m orchestro status`` and ``scale`` read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ConfigurationError, HTTPError
from ..gateway.problem import problem_response
from ..observability.prometheus import exposition
from ..observability.telemetry import get_telemetry
from ..registry.local import default_path
from .supervisor import Supervisor

__all__ = ["AdminServer", "controllers_dir", "find_controllers"]

_log = logging.getLogger("orchestro.controller")


def controllers_dir() -> Path:
    return default_path().parent / "controllers"


def find_controllers() -> list[dict[str, Any]]:
    """The admin endpoints of the controllers running on this machine."""
    found: list[dict[str, Any]] = []
    directory = controllers_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            os.kill(int(record["pid"]), 0)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a controller that is gone
            continue
        found.append(record)
    return found


# The names a request to the loopback admin API may carry in Host: anything else came through
# a DNS name that resolves to loopback (a page's DNS rebinding), not from this machine's CLI.
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _local_only(request: web.Request) -> None:
    """Refuse what a web page can make a browser send to 127.0.0.1: a cross-site request
    (browsers add ``Origin``; the CLI never does) — a "simple" text/plain POST needs no
    preflight, so without this any page could scale or restart this machine's cells — and a
    rebound DNS name in ``Host``."""
    if "Origin" in request.headers:
        raise HTTPError(
            403,
            "the admin API answers this machine's CLI, not web pages (the request has an "
            "Origin header)",
        )
    host = request.headers.get("Host")
    if host is not None:
        name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
        if name.lower() not in _LOCAL_HOSTS:
            raise HTTPError(
                403, f"the admin API answers 127.0.0.1 and localhost, not Host {host!r}"
            )


class AdminServer:
    def __init__(self, supervisor: Supervisor, target: str) -> None:
        self._supervisor = supervisor
        self._target = target
        self._runner: web.AppRunner | None = None
        self._record: Path | None = None
        self._closing = asyncio.Event()  # set at close: open event streams end
        self.url = ""

    def _app(self) -> web.Application:
        supervisor = self._supervisor

        @web.middleware
        async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
            try:
                _local_only(request)
                response: web.StreamResponse = await handler(request)
                return response
            except HTTPError as exc:
                return problem_response(exc, instance=request.path)
            except ConfigurationError as exc:
                return problem_response(HTTPError(400, str(exc)), instance=request.path)

        async def cells(request: web.Request) -> web.Response:
            return web.json_response([g.as_json() for g in supervisor.groups.values()])

        async def events(request: web.Request) -> web.StreamResponse:
            try:
                since = int(request.query.get("since", "0"))
            except ValueError:
                raise HTTPError(400, "since must be an event number") from None
            if "follow" not in request.query:
                return web.json_response([e.as_json() for e in supervisor.events.since(since)])
            # A stream: one JSON event per line, as they happen, until the client leaves or
            # the controller stops (it never holds the controller's exit).
            stream = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await stream.prepare(request)
            queue: asyncio.Queue[Any] = asyncio.Queue()
            supervisor.events.hooks.append(queue.put_nowait)
            closing = asyncio.ensure_future(self._closing.wait())  # awaited below
            try:
                for event in supervisor.events.since(since):
                    await stream.write(json.dumps(event.as_json()).encode() + b"\n")
                while not self._closing.is_set():
                    getting = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getting, closing}, return_when=asyncio.FIRST_COMPLETED)
                    if not getting.done():
                        getting.cancel()
                        break
                    event = getting.result()
                    await stream.write(json.dumps(event.as_json()).encode() + b"\n")
                while not queue.empty():  # the last events (the replicas stopped)
                    event = queue.get_nowait()
                    await stream.write(json.dumps(event.as_json()).encode() + b"\n")
                await stream.write_eof()
            except ConnectionResetError:
                # The client left (or the connection is closing at shutdown): nobody to
                # tell; not an error of the controller's.
                _log.debug("an event stream's client went away")
            finally:
                closing.cancel()
                supervisor.events.hooks.remove(queue.put_nowait)
            return stream

        async def scale(request: web.Request) -> web.Response:
            cell = request.match_info["cell"]
            try:
                body = await request.json()
                replicas = body["replicas"]
            except (ValueError, KeyError, TypeError):
                raise HTTPError(400, 'send {"replicas": N}') from None
            if not isinstance(replicas, int) or isinstance(replicas, bool):
                raise HTTPError(422, f"replicas must be an integer, not {replicas!r}")
            if cell not in supervisor.groups:
                raise HTTPError(404, f"no cell {cell!r} in this controller")
            supervisor.scale(cell, replicas)
            return web.json_response(supervisor.groups[cell].as_json())

        async def restart(request: web.Request) -> web.Response:
            cell = request.match_info["cell"]
            if cell not in supervisor.groups:
                raise HTTPError(404, f"no cell {cell!r} in this controller")
            try:
                index = int(request.match_info["index"])
            except ValueError:
                raise HTTPError(400, "the replica is a number") from None
            supervisor.restart(cell, index)
            return web.json_response(supervisor.groups[cell].as_json())

        async def metrics(request: web.Request) -> web.Response:
            return exposition(request, get_telemetry().registry)

        app = web.Application(middlewares=[problems])
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/cells", cells)
        app.router.add_get("/events", events)
        app.router.add_post("/cells/{cell}/scale", scale)
        app.router.add_post("/cells/{cell}/replicas/{index}/restart", restart)
        return app

    async def start(self, port: int = 0) -> str:
        # Event streams end at close; nothing else it serves takes more than this to answer.
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{bound}"
        directory = controllers_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self._record = directory / f"{os.getpid()}.json"
        self._record.write_text(
            json.dumps({"pid": os.getpid(), "url": self.url, "target": self._target})
        )
        return self.url

    async def aclose(self) -> None:
        self._closing.set()
        if self._record is not None:
            self._record.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
