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
from ..config import AuthSettings, GatewaySettings
from ..errors import CellDefinitionError, HTTPError
from ..security.identity import IdentityResolver, anonymous
from .admission import Admission, Gate
from .auth import AuthStep
from .binding import Binder
from .cors import CorsStep, preflight_handler
from .health import health_handlers
from .ingress import IngressLimits, ProblemServer
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
from .ratelimit import RateLimitStep
from .router import Router
from .steps import AccessStep
from .telemetry import ServerTelemetry
from .tokens import TokenVerifier

__all__ = ["Gateway", "build_gateway"]


class Gateway:
    """A cell's composed gateway: its request handler, routes and OpenAPI document."""

    def __init__(
        self,
        spec: CellSpec,
        pipeline: Pipeline,
        openapi: dict[str, Any],
        max_body_size: int,
        settings: GatewaySettings | None = None,
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.openapi = openapi
        self.max_body_size = max_body_size
        self.settings = settings or GatewaySettings()

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

        settings = self.settings
        return ProblemServer(
            self.pipeline,
            limits=IngressLimits.of(settings),
            request_factory=make_request,
            access_log=None,  # access logging is the observability layer's job
            keepalive_timeout=settings.keepalive_timeout,
            max_headers=settings.max_header_count,
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
    auth: AuthSettings | None = None,
    clock: Callable[[], float] | None = None,
    access: AccessStep | None = None,
    public_only: bool = False,
    listener: str | None = None,
) -> Gateway:
    """The gateway serving ``instance``, a started or starting ``spec.cls``.

    ``telemetry`` measures every service request (around every step); ``own_routes`` are
    more GET endpoints of the gateway itself (``/metrics``, ``/prometheus/sd``); ``auth``
    checks the bearer tokens of ``auth=`` services (default: from the environment);
    ``clock`` is the rate limits' (a fake one in tests). ``access`` is the policy step
    (default: the declared rules, callers read by ``identity``); ``public_only`` leaves
    internal services out (the public port of a cell that has a mesh listener: an internal
    path there is not found). ``listener`` names a cell's second gateway (``"mesh"``) in its
    counters' series, which would otherwise repeat the first's.
    """
    settings = settings or GatewaySettings()
    max_body = int(settings.max_body_size)
    # The edge's steps (docs/concepts/edge.md). CORS first: it only has an after hook, and
    # an after hook runs when every before outside it ran, so first means on every answer (a
    # page must read its 401 or 429 too). Who the caller is decides what it may spend, so
    # tokens are checked before rate limits.
    tokens = AuthStep(None if auth is None else TokenVerifier(auth), identity)
    limits = RateLimitStep(identity, max_keys=settings.rate_limit_keys, **_clock(clock))
    steps: list[Step] = [CorsStep(), access or AccessStep(identity), tokens, limits]
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
    if spec.cors is not None:
        _add_preflights(spec, router)
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
        which = {} if listener is None else {"orchestro.listener": listener}
        telemetry.observe_malformed(pipeline.malformed, which)
        telemetry.observe_count(
            "orchestro.gateway.rate_limited",
            "Requests refused with 429 by a rate limit, by limit (a service, or the cell's).",
            lambda: [({"orchestro.rate_limit": lim.name}, lim.refused) for lim in limits.limiters],
            which,
        )
        telemetry.observe_count(
            "orchestro.gateway.unauthenticated",
            "Requests refused with 401 for a missing or invalid bearer token, by scheme.",
            lambda: [({"orchestro.auth": scheme}, n) for scheme, n in tokens.refused.items()],
            which,
        )
    return Gateway(spec, pipeline, openapi, max_body, settings)


def _clock(clock: Callable[[], float] | None) -> dict[str, Callable[[], float]]:
    return {} if clock is None else {"clock": clock}


def _add_preflights(spec: CellSpec, router: Router[CompiledRoute]) -> None:
    """An OPTIONS route on each path of the cell's public services (see gateway/cors.py)."""
    assert spec.cors is not None
    served: dict[str, list[str]] = {}
    for op in spec.operations:
        if not op.service.internal:
            methods = served.setdefault(op.service.path, [])
            methods.append(op.service.method)
            if op.service.method == "GET":
                methods.append("HEAD")
    for path, methods in served.items():
        if "OPTIONS" in methods:
            continue  # the cell answers OPTIONS there itself
        handler = preflight_handler(spec.name, spec.cors, path, methods)
        router.add("OPTIONS", path, compose([], Route(spec, path), Endpoint.of_handler(handler)))


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
