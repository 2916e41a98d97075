"""``@cell`` and ``@service``: declare a cell and its services.

```python
from orchestro import cell, service

@cell("greeter", port=8081)
class Greeter:
    @service.get("/greet")
    async def greet(self, name: str | None = None) -> Greeting:
        return Greeting(message=f"Hello {name} from Orchestro Cell!")
```

Both decorators attach a frozen spec and return the original object: ``Greeter().greet()`` is
still a plain coroutine a unit test can await.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar, cast

from ..errors import CellDefinitionError
from .edge import CORS, parse_auth, parse_rate_limit
from .scaling import Scaling
from .signature import analyse
from .spec import CELL_ATTR, PATH_PARAM, SERVICE_ATTR, CellSpec, OperationSpec, ServiceSpec

__all__ = ["RESERVED_PATHS", "cell", "service"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
C = TypeVar("C", bound=type[Any])

# Paths the gateway serves itself, checked here at import so that a clash is found before a
# start (the gateway refuses them again at start). The gateway builds its own list from the
# handlers it mounts (gateway/health.py, and the /metrics and /prometheus/sd of host/cell.py); the
# cell layer cannot import it from there, so a test pins that the two agree. /_orchestro/ is
# reserved so that later capabilities (admin) never break a user's routes.
RESERVED_PATHS: Final = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/metrics", "/prometheus/sd"}
)
RESERVED_PREFIX: Final = "/_orchestro/"

_CELL_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]*$")
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class _ServiceDecorators:
    """The ``service`` object: ``@service.get(path)``, ``.post``, ``.put``, ``.patch``,
    ``.delete``, or ``@service.route(method, path)``."""

    def route(
        self,
        method: str,
        path: str,
        *,
        internal: bool = False,
        idempotent: bool | None = None,
        timeout: float | None = None,
        status: int | None = None,
        summary: str | None = None,
        tags: Iterable[str] = (),
        responses: Mapping[int, str] | None = None,
        deprecated: bool = False,
        rate_limit: str | None = None,
        auth: str | Iterable[str] | None = None,
        allow: Iterable[str] | None = None,
    ) -> Callable[[F], F]:
        """Declare a service answering ``method`` requests on ``path``.

        Args:
            internal: reachable through the mesh only: refused to anonymous callers and left
                out of the public OpenAPI document.
            idempotent: safe to retry; defaults to True for GET, HEAD, PUT and DELETE.
            timeout: seconds the method may run before the caller gets a 504.
            status: status of a successful answer (default 200, or 204 for ``-> None``).
            summary: one line for the OpenAPI document (default: the docstring's first line).
            responses: other statuses the method answers with, and what they mean, e.g.
                ``{404: "No such order"}``; they are documented as problem+json answers.
            rate_limit: requests per caller, e.g. ``"100/s"``, ``"6000/min"``,
                ``"100/s burst 20"``, or ``"unlimited"``; default: the cell's.
            auth: the bearer token a caller from outside must present: ``"jwt"``,
                ``"api-key"``, ``("jwt", "api-key")`` (either), or ``"none"``; default: the
                cell's.
            allow: the cells that may call this internal service (replaces the cell's
                ``allow`` for it), e.g. ``allow=["auditor"]``; needs ``internal=True``.
        """
        method = method.upper()

        def decorate(func: F) -> F:
            where = getattr(func, "__qualname__", repr(func))
            _check_path(path, where)
            if not inspect.iscoroutinefunction(cast(Any, func)):
                raise CellDefinitionError(
                    f"{where}: a service must be a coroutine method: write `async def "
                    f"{getattr(func, '__name__', 'method')}(self, ...)`"
                )
            if timeout is not None and not timeout > 0:
                raise CellDefinitionError(f"{where}: timeout must be a positive number of seconds")
            if status is not None and not 200 <= status <= 399:
                raise CellDefinitionError(
                    f"{where}: status={status} is not a success status: use 2xx or 3xx, and "
                    "raise HTTPError for errors"
                )
            limit = None if rate_limit is None else parse_rate_limit(rate_limit, where)
            schemes = None if auth is None else parse_auth(auth, where)
            for code in responses or {}:
                if not 100 <= code <= 599:
                    raise CellDefinitionError(f"{where}: responses has a bad status {code}")
            allowed = _allow_list(allow, where)
            if allowed is not None and not internal:
                raise CellDefinitionError(
                    f"{where}: allow= needs internal=True (a public service answers anyone on "
                    "the public port)"
                )
            doc = inspect.getdoc(func)
            first, _, rest = (doc or "").partition("\n")
            spec = ServiceSpec(
                method=method,
                path=path,
                internal=internal,
                idempotent=method in _IDEMPOTENT_METHODS if idempotent is None else idempotent,
                timeout=timeout,
                status=status if status is not None else 0,  # 0: decided by the return type
                summary=summary if summary is not None else (first.strip() or None),
                description=rest.strip() or None,
                tags=tuple(tags),
                responses=dict(responses or {}),
                deprecated=deprecated,
                rate_limit=limit,
                auth=schemes,
                allow=allowed,
            )
            if hasattr(func, SERVICE_ATTR):
                raise CellDefinitionError(
                    f"{where}: has two @service decorators: declare one route per method"
                )
            setattr(func, SERVICE_ATTR, spec)
            return func

        return decorate

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a GET service (see :meth:`route` for the options)."""
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a POST service (see :meth:`route` for the options)."""
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a PUT service (see :meth:`route` for the options)."""
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a PATCH service (see :meth:`route` for the options)."""
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a DELETE service (see :meth:`route` for the options)."""
        return self.route("DELETE", path, **options)


service: Final = _ServiceDecorators()


def cell(
    name: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    version: str = "0.0.0",
    scaling: Scaling | None = None,
    rate_limit: str | None = None,
    auth: str | Iterable[str] | None = None,
    cors: CORS | None = None,
    allow: Iterable[str] | None = None,
) -> Callable[[C], C]:
    """Declare a class as a cell named ``name`` whose ``@service`` methods are its services.

    Args:
        name: the cell's name in discovery, metrics and logs: lowercase letters, digits and
            ``-`` (a DNS label, so it can become a Kubernetes name).
        port: the gateway's port; 0 picks a free one at start.
        host: the address the gateway listens on.
        version: the version reported in OpenAPI and discovery.
        scaling: how many replicas ``orchestro run`` keeps (``Scaling(min=, max=, ...)``);
            one, unscaled, by default.
        rate_limit: the default limit per caller of every service that declares none, one
            budget shared by them, e.g. ``"600/min"`` (see ``service.route``).
        auth: the bearer token callers from outside must present to every service that
            declares no ``auth`` of its own (``"jwt"``, ``"api-key"``, or both).
        cors: which browser origins may call the cell (:class:`~orchestro.CORS`).
        allow: the cells that may call its internal services, e.g. ``allow=["teller"]``
            (deny everyone else); unset: any cell of the trust domain.

    The class must be constructible with no arguments; set dependencies up in
    ``async def on_start(self)`` and release them in ``async def on_stop(self)``.
    """
    if not isinstance(name, str) or not _CELL_NAME.match(name):
        raise CellDefinitionError(
            f"@cell({name!r}): a cell name is 1-63 lowercase letters, digits and '-', starting "
            'with a letter, e.g. @cell("order-service")'
        )
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise CellDefinitionError(f"@cell({name!r}): port must be 0-65535 (0 picks a free port)")
    where_cell = f"@cell({name!r})"
    cell_limit = None if rate_limit is None else parse_rate_limit(rate_limit, where_cell)
    cell_auth = () if auth is None else parse_auth(auth, where_cell)
    if cors is not None:
        if not isinstance(cors, CORS):
            raise CellDefinitionError(
                f"{where_cell}: cors={cors!r} is not a CORS(...): write "
                "cors=CORS(origins=['https://app.example'])"
            )
        cors.check(where_cell)

    allowed = _allow_list(allow, f"@cell({name!r})")

    def decorate(cls: C) -> C:
        where = cls.__qualname__
        if not isinstance(cls, type):
            raise CellDefinitionError(f"@cell({name!r}) decorates classes, not {cls!r}")
        if CELL_ATTR in cls.__dict__:
            raise CellDefinitionError(f"{where}: has two @cell decorators: keep one")
        _check_constructible(cls)
        for hook in ("on_start", "on_stop"):
            fn = getattr(cls, hook, None)
            if fn is not None and not inspect.iscoroutinefunction(fn):
                raise CellDefinitionError(
                    f"{where}.{hook}: must be a coroutine: write `async def {hook}(self)`"
                )
        operations = tuple(analyse(cls, attr, func) for attr, func in _services_of(cls))
        _check_routes(where, operations)
        spec = CellSpec(
            name=name,
            cls=cls,
            host=host,
            port=port,
            version=version,
            description=inspect.getdoc(cls),
            operations=operations,
            scaling=scaling or Scaling(),
            rate_limit=cell_limit,
            auth=cell_auth,
            cors=cors,
            allow=allowed,
        )
        setattr(cls, CELL_ATTR, spec)
        return cls

    return decorate


def _allow_list(allow: Iterable[str] | None, where: str) -> tuple[str, ...] | None:
    """``allow=`` as a sorted tuple of cell names, checked here so a typo fails at import."""
    if allow is None:
        return None
    if isinstance(allow, str):
        raise CellDefinitionError(
            f"{where}: allow= is a list of cell names, e.g. allow=[{allow!r}]"
        )
    names = tuple(allow)
    for name in names:
        if not isinstance(name, str) or not _CELL_NAME.match(name):
            raise CellDefinitionError(
                f"{where}: allow= lists {name!r}, which is not a cell name (1-63 lowercase "
                "letters, digits and '-', e.g. allow=[\"teller\"])"
            )
    return tuple(sorted(set(names)))


def _services_of(cls: type[Any]) -> list[tuple[str, Callable[..., Any]]]:
    """Service methods of ``cls`` and its bases, the most derived definition winning."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if hasattr(func, SERVICE_ATTR):
                if func is not value:
                    raise CellDefinitionError(
                        f"{cls.__qualname__}.{attr}: a service must be a plain method, "
                        "not a staticmethod or classmethod"
                    )
                found[attr] = func
            else:
                found.pop(attr, None)  # overridden by a non-service attribute
    return list(found.items())


def _check_path(path: str, where: str) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise CellDefinitionError(f"{where}: path {path!r} must start with '/', e.g. '/orders'")
    if "?" in path or "#" in path:
        raise CellDefinitionError(
            f"{where}: path {path!r} must not contain '?' or '#': query parameters are the "
            "method's other parameters"
        )
    if path in RESERVED_PATHS or path.startswith(RESERVED_PREFIX):
        raise CellDefinitionError(
            f"{where}: path {path!r} is reserved by the gateway (reserved: "
            f"{', '.join(sorted(RESERVED_PATHS))}, {RESERVED_PREFIX}*): choose another path"
        )
    for segment in path.split("/")[1:]:
        names = PATH_PARAM.findall(segment)
        rest = PATH_PARAM.sub("", segment)
        if "{" in rest or "}" in rest or not _SEGMENT.match(rest):
            raise CellDefinitionError(
                f"{where}: path {path!r} has a malformed segment {segment!r}: use literal "
                "characters and {name} placeholders"
            )
        if names and segment != "{" + names[0] + "}":
            raise CellDefinitionError(
                f"{where}: path {path!r}: a placeholder must be a whole segment, like "
                "'/files/{file_id}'"
            )
        for pname in names:
            if not pname.isidentifier():
                raise CellDefinitionError(
                    f"{where}: path {path!r}: placeholder {{{pname}}} must be a Python "
                    "identifier naming a parameter of the method"
                )


def _route_key(path: str) -> str:
    """Paths that match the same requests map to the same key."""
    return PATH_PARAM.sub("{}", path)


def _check_routes(where: str, operations: tuple[OperationSpec, ...]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for op in operations:
        key = (op.service.method, _route_key(op.service.path))
        if key in seen:
            raise CellDefinitionError(
                f"{where}: {seen[key]} and {op.name} both answer {op.service.method} "
                f"{op.service.path}: give one of them another path or method"
            )
        seen[key] = op.name


def _check_constructible(cls: type[Any]) -> None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    required = [
        p.name
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise CellDefinitionError(
            f"{cls.__qualname__}: a cell is created with no arguments, but __init__ requires "
            f"{', '.join(required)}: give them defaults or set them up in `async def on_start`"
        )
