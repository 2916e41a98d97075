"""Build a cell's gateway: routes and pipeline composed once, then frozen.

The gateway runs on aiohttp's low-level ``web.Server`` with its own :class:`Router` and
:class:`Pipeline` rather than a ``web.Application``: the application's generic router,
middleware chain and per-request coroutine layers cost ~15% of a small request's time, and
the gateway composes everything they would do itself (see ``docs/architecture.md``).

Routes, in the order they are tried:

1. the gateway's own: ``/healthz``, ``/readyz``, ``/openapi.json``;
2. the cell's services, literal paths before paths with placeholders;
3. otherwise 405 with ``Allow`` when the path exists, else 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from ..cell.spec import CellSpec
from ..config import GatewaySettings
from ..errors import CellDefinitionError, HTTPError
from ..observability.server import ServerTelemetry
from ..security.identity import IdentityResolver, anonymous
from .admission import Admission, Gate
from .binding import Binder
from .health import health_handlers
from .openapi import build_openapi
from .pipeline import (
    CompiledRoute,
    Endpoint,
    Handler,
    Pipeline,
    Route,
    Step,
    compose,
    service_endpoint,
)
from .router import Router
from .server import ProblemServer
from .steps import AccessStep

__all__ = ["Gateway", "build_gateway"]


class Gateway:
    """A cell's composed gateway: its request handler, routes and OpenAPI document."""

    def __init__(
        self, spec: CellSpec, pipeline: Pipeline, openapi: dict[str, Any], max_body_size: int
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.openapi = openapi
        self.max_body_size = max_body_size

    def server(self) -> ProblemServer:
        """An aiohttp low-level server answering with this gateway."""
        max_size = self.max_body_size

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: BaseProtocol,
            writer: Any,
            task: Any,
            _cls: Callable[..., web.BaseRequest] = web.BaseRequest,
        ) -> web.BaseRequest:
            return _cls(
                message, payload, protocol, writer, task, task.get_loop(), client_max_size=max_size
            )

        return ProblemServer(
            self.pipeline,
            request_factory=make_request,
            access_log=None,  # access logging is the observability layer's job
        )


def build_gateway(
    spec: CellSpec,
    instance: object,
    *,
    gate: Gate,
    settings: GatewaySettings | None = None,
    identity: IdentityResolver = anonymous,
    telemetry: ServerTelemetry | None = None,
    own_routes: Mapping[str, Handler] | None = None,
    load: Callable[[], dict[str, float]] | None = None,
    access: AccessStep | None = None,
    public_only: bool = False,
) -> Gateway:
    """The gateway serving ``instance``, a started or starting ``spec.cls``.

    ``telemetry`` measures every service request (around every step); ``own_routes`` are
    more GET endpoints of the gateway itself (``/metrics``, ``/prometheus/sd``). ``access``
    is the policy step (default: the declared rules, callers read by ``identity``);
    ``public_only`` leaves internal services out (the public port of a cell that has a mesh
    listener: an internal path there is not found).
    """
    settings = settings or GatewaySettings()
    max_body = int(settings.max_body_size)
    steps: list[Step] = [access or AccessStep(identity)]
    admission = Admission(gate, spec.name, max_concurrency=settings.max_concurrency)
    router: Router[CompiledRoute] = Router()

    openapi = build_openapi(spec)
    handlers = health_handlers(spec, gate, json.dumps(openapi).encode(), load)
    handlers.update(own_routes or {})
    # The paths the gateway serves itself are what it mounts here: a service routed at one of
    # them is refused by name (the decorator's reserved list is checked earlier, at import).
    for op in spec.operations:
        if op.service.path in handlers:
            raise CellDefinitionError(
                f"cell {spec.name!r}: service {op.name!r} is routed at {op.service.path!r}, a "
                f"path the gateway serves itself ({', '.join(sorted(handlers))}): choose "
                "another path"
            )
    for path, handler in handlers.items():
        own = compose([], Route(spec, path), Endpoint.of_handler(handler))
        router.add("GET", path, own)
        router.add("HEAD", path, own)

    for op in spec.operations:
        if public_only and op.service.internal:
            continue
        path = op.service.path
        binder = Binder(op, max_body_size=max_body, identity=identity)
        route = Route(spec, path, op)
        compiled = compose(
            steps,
            route,
            service_endpoint(op, getattr(instance, op.name), binder),
            None if telemetry is None else telemetry.meter(route),
            admission,
        )
        router.add(op.service.method, path, compiled)
        if op.service.method == "GET":
            router.add("HEAD", path, compiled)
    router.freeze()

    # Answers to requests no route matched are measured too (without http.route): a burst
    # of 404s is something to see.
    unmatched = Route(spec, "")
    meter = None if telemetry is None else telemetry.meter(unmatched, unmatched=True)

    def not_allowed(allowed: tuple[str, ...]) -> CompiledRoute:
        return compose([], unmatched, Endpoint.of_handler(_not_allowed(allowed)), meter)

    pipeline = Pipeline(
        router,
        spec.name,
        not_found=compose([], unmatched, Endpoint.of_handler(_not_found), meter),
        not_allowed=not_allowed,
    )
    if telemetry is not None:
        telemetry.observe_malformed(pipeline.malformed)
    return Gateway(spec, pipeline, openapi, max_body)


def _not_allowed(allowed: tuple[str, ...]) -> Handler:
    allow = ", ".join(allowed)

    async def method_not_allowed(request: web.BaseRequest) -> web.StreamResponse:
        raise HTTPError(
            405,
            f"{request.method} is not allowed on {request.path}; allowed: {allow}",
            headers={"Allow": allow},
        )

    return method_not_allowed


async def _not_found(request: web.BaseRequest) -> web.StreamResponse:
    raise HTTPError(404, f"no service answers {request.path}")
