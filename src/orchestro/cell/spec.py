"""Frozen specifications that ``@cell`` and ``@service`` attach to the user's code.

The decorators only declare: they build these objects and return the decorated class or
function unchanged. Everything else (gateway, OpenAPI, test kit) reads the specs.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .edge import CORS, RateLimit
from .scaling import Scaling

__all__ = [
    "CELL_ATTR",
    "REQUIRED",
    "SERVICE_ATTR",
    "CellSpec",
    "OperationSpec",
    "ParamSource",
    "ParamSpec",
    "ServiceSpec",
    "path_params",
    "spec_of",
]

CELL_ATTR: Final = "__orchestro_cell__"
SERVICE_ATTR: Final = "__orchestro_service__"
PATH_PARAM: Final = re.compile(r"\{([^{}]*)\}")  # a path's {name} parameters


class _Required:
    """Sentinel default of a parameter that has none (``None`` is a real default)."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


class ParamSource(enum.StrEnum):
    PATH = "path"
    QUERY = "query"
    HEADER = "header"
    BODY = "body"
    REQUEST = "request"  # the raw aiohttp request, for what binding does not cover
    CALLER = "caller"  # the caller's proven identity


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What ``@service.<method>(path, ...)`` declared about one method."""

    method: str
    path: str
    internal: bool = False
    idempotent: bool = True
    timeout: float | None = None
    status: int = 200
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    responses: Mapping[int, str] = field(default_factory=dict)
    deprecated: bool = False
    # The edge (cell/edge.py): None inherits the cell's declaration.
    rate_limit: RateLimit | None = None
    auth: tuple[str, ...] | None = None
    allow: tuple[str, ...] | None = None  # cells that may call it (internal only); None: any


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a service method and where its value comes from."""

    name: str
    source: ParamSource
    annotation: Any
    default: Any = REQUIRED
    alias: str = ""  # the name on the wire: header name, query key, path segment name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """A service method as the gateway serves it: its declaration plus its analysed signature."""

    name: str  # the method's name on the cell class; also the OpenAPI operationId
    service: ServiceSpec
    params: tuple[ParamSpec, ...]
    returns: Any  # the type of the body of a successful answer (Any when not annotated)
    returns_response: bool  # annotated as Response[...]: the method picks status and headers
    returns_none: bool  # annotated as -> None: answers 204
    qualname: str = ""  # Class.method, for messages about the method

    @property
    def body(self) -> ParamSpec | None:
        for param in self.params:
            if param.source is ParamSource.BODY:
                return param
        return None


@dataclass(frozen=True, slots=True)
class CellSpec:
    """What ``@cell(...)`` declared about a class, with its analysed services."""

    name: str
    cls: type[Any]
    host: str
    port: int
    version: str
    description: str | None
    operations: tuple[OperationSpec, ...]
    scaling: Scaling = field(default_factory=Scaling)
    # The edge (cell/edge.py): a per-caller default limit, token schemes, browser origins.
    rate_limit: RateLimit | None = None
    auth: tuple[str, ...] = ()
    cors: CORS | None = None
    allow: tuple[str, ...] | None = None  # cells that may call its internal services; None: any

    def operation(self, name: str) -> OperationSpec:
        for op in self.operations:
            if op.name == name:
                return op
        raise KeyError(f"cell {self.name!r} has no service {name!r}")


def spec_of(cell: type[Any] | object) -> CellSpec:
    """The :class:`CellSpec` of a ``@cell`` class or of an instance of one.

    ```python
    assert spec_of(Greeter).name == "greeter"
    ```
    """
    cls = cell if isinstance(cell, type) else type(cell)
    spec = cls.__dict__.get(CELL_ATTR)
    if not isinstance(spec, CellSpec):
        raise TypeError(f'{cls.__qualname__} is not a cell: decorate it with @cell("name")')
    return spec


def path_params(path: str) -> list[str]:
    """The names of a route path's ``{name}`` parameters, in order."""
    return PATH_PARAM.findall(path)
