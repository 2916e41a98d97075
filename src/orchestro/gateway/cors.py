"""CORS for browser callers: preflights answered by the gateway, headers on every answer.

A cell declared with ``cors=CORS(origins=[...])`` (:class:`~orchestro.cell.edge.CORS`) gets,
following the Fetch standard's CORS protocol:

- an ``OPTIONS`` route on each path of its public services. A preflight (``Origin`` and
  ``Access-Control-Request-Method`` present) from an allowed origin, for a method the path
  serves and headers the declaration allows, is answered 204 with
  ``Access-Control-Allow-Origin/-Methods/-Headers/-Max-Age`` (and ``-Credentials``); any other
  preflight gets a 403 problem+json saying which part was refused (a browser only says
  "CORS error"). A plain ``OPTIONS`` is answered 204 with ``Allow``. Preflights carry no
  credentials, so neither bearer tokens nor rate limits apply to them.
- on every answer of its services (errors included, so a page can read a 401 or a 429):
  ``Access-Control-Allow-Origin`` with the request's origin when allowed (``*`` for any
  origin without credentials), ``Access-Control-Allow-Credentials``,
  ``Access-Control-Expose-Headers`` — and ``Vary: Origin`` whenever the answer depends on the
  origin, so a shared cache never hands one origin's answer to another.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDict

from ..cell.edge import CORS
from ..errors import HTTPError
from .pipeline import Handler, Hooks, Route

__all__ = ["CorsStep", "preflight_handler"]

_VARY_PREFLIGHT = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class CorsStep:
    """Adds the CORS response headers on the routes of a cell that declares ``cors``."""

    def hooks(self, route: Route) -> Hooks | None:
        cors = route.cell.cors
        op = route.operation
        if cors is None or op is None or op.service.internal:
            return None
        origins = frozenset(cors.origins)
        any_origin = cors.any_origin
        credentials = "true" if cors.credentials else None
        expose = ", ".join(cors.expose)

        def decorate(request: web.BaseRequest, response: web.StreamResponse | None) -> None:
            if response is None or response.prepared:
                return
            headers = response.headers
            if not any_origin:
                _vary(headers, "Origin")
            origin = request.headers.get("Origin")
            if origin is None:
                return
            if any_origin:
                headers["Access-Control-Allow-Origin"] = "*"
            elif origin in origins:
                headers["Access-Control-Allow-Origin"] = origin
            else:
                return
            if credentials is not None:
                headers["Access-Control-Allow-Credentials"] = credentials
            if expose:
                headers["Access-Control-Expose-Headers"] = expose

        return Hooks(after=decorate)


def _vary(headers: CIMultiDict[str], name: str) -> None:
    present = headers.get("Vary")
    if present is None:
        headers["Vary"] = name
    elif name.lower() not in (v.strip().lower() for v in present.split(",")):
        headers["Vary"] = f"{present}, {name}"


def preflight_handler(cell: str, cors: CORS, path: str, served: Iterable[str]) -> Handler:
    """The ``OPTIONS`` handler of ``path``, whose services answer the methods ``served``."""
    methods = [m for m in served if not cors.methods or m in cors.methods]
    allow = ", ".join(sorted({*served, "OPTIONS"}))
    allowed_methods = ", ".join(methods)
    allowed_headers = {h.lower() for h in cors.headers}
    origins = frozenset(cors.origins)
    listed = ", ".join(cors.origins)
    base = {"Vary": _VARY_PREFLIGHT}
    if cors.credentials:
        base["Access-Control-Allow-Credentials"] = "true"
    max_age = str(cors.max_age)

    async def preflight(request: web.BaseRequest) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        wanted = request.headers.get("Access-Control-Request-Method")
        if origin is None or wanted is None:
            return web.Response(status=204, headers={"Allow": allow})
        if not cors.any_origin and origin not in origins:
            raise HTTPError(
                403,
                f"CORS: origin {origin!r} may not call cell {cell!r} (allowed: {listed})",
                headers={"Vary": _VARY_PREFLIGHT},
            )
        if wanted not in methods:
            raise HTTPError(
                403,
                f"CORS: {wanted} is not allowed on {path} (allowed: {allowed_methods or 'none'})",
                headers={"Vary": _VARY_PREFLIGHT},
            )
        asked = [
            h.strip()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        refused = [h for h in asked if h.lower() not in allowed_headers]
        if refused:
            raise HTTPError(
                403,
                f"CORS: request header(s) {', '.join(refused)} not allowed on {path} "
                f"(allowed: {', '.join(cors.headers) or 'none'}; add them to CORS(headers=...))",
                headers={"Vary": _VARY_PREFLIGHT},
            )
        headers = dict(base)
        headers["Access-Control-Allow-Origin"] = "*" if cors.any_origin else origin
        headers["Access-Control-Allow-Methods"] = allowed_methods
        if cors.headers:
            headers["Access-Control-Allow-Headers"] = ", ".join(cors.headers)
        headers["Access-Control-Max-Age"] = max_age
        return web.Response(status=204, headers=headers)

    return preflight
