"""Read a service method's signature into :class:`ParamSpec` s, or say exactly what is wrong.

Rules, in order: a parameter named in the path template is a path parameter; a parameter
annotated ``Annotated[T, Header()]`` / ``Query()`` / ``Body()`` goes where its marker says; a
pydantic model is the JSON body; an ``aiohttp.web.Request`` receives the raw request and a
:class:`~orchestro.security.Caller` the caller's identity; anything else is a query parameter.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from aiohttp import web
from pydantic import BaseModel, PydanticUndefinedAnnotation, PydanticUserError, TypeAdapter

from ..errors import CellDefinitionError
from ..security.identity import Caller
from .params import Body, Header, Query
from .response import Response
from .spec import (
    REQUIRED,
    SERVICE_ATTR,
    OperationSpec,
    ParamSource,
    ParamSpec,
    ServiceSpec,
    path_params,
)

__all__ = ["analyse", "is_response_type", "strip_optional"]

_SCALARS = (
    str,
    int,
    float,
    bool,
    decimal.Decimal,
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.datetime,
    datetime.timedelta,
    enum.Enum,
    bytes,
)
_SEQUENCES = (list, set, frozenset, tuple)
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})


def analyse(cls: type[Any], attr: str, func: Callable[..., Any]) -> OperationSpec:
    """Analyse one ``@service`` method of ``cls``."""
    spec: ServiceSpec = getattr(func, SERVICE_ATTR)
    where = f"{cls.__qualname__}.{attr}"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except NameError as exc:
        raise CellDefinitionError(
            f"{where}: cannot resolve the type hint {exc.name!r}: import or define it before "
            f"the class {cls.__qualname__}"
        ) from exc
    except Exception as exc:
        raise CellDefinitionError(f"{where}: cannot read its type hints: {exc}") from exc

    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise CellDefinitionError(f"{where}: a service is a method: its first parameter is self")
    in_path = path_params(spec.path)
    specs: list[ParamSpec] = []
    for p in params[1:]:
        specs.append(_param(where, spec, p, hints, in_path))
    for name in in_path:
        if not any(s.name == name and s.source is ParamSource.PATH for s in specs):
            raise CellDefinitionError(
                f"{where}: path {spec.path!r} names {{{name}}} but the method has no parameter "
                f"{name!r}: add `{name}: str` (or int, UUID, ...)"
            )
    bodies = [s for s in specs if s.source is ParamSource.BODY]
    if len(bodies) > 1:
        raise CellDefinitionError(
            f"{where}: has {len(bodies)} body parameters ({', '.join(b.name for b in bodies)}): "
            "a request has one JSON body; put the fields in one pydantic model"
        )
    if bodies and spec.method in _NO_BODY_METHODS:
        raise CellDefinitionError(
            f"{where}: a {spec.method} request has no body, but parameter {bodies[0].name!r} is "
            "one: use POST/PUT/PATCH, or make its fields query parameters"
        )
    wire_names: dict[tuple[ParamSource, str], str] = {}
    for s in specs:
        key = (s.source, s.alias.lower() if s.source is ParamSource.HEADER else s.alias)
        if s.source in (ParamSource.QUERY, ParamSource.HEADER) and key in wire_names:
            raise CellDefinitionError(
                f"{where}: parameters {wire_names[key]!r} and {s.name!r} both read the "
                f"{s.source.value} {s.alias!r}: give one another alias"
            )
        wire_names[key] = s.name

    returns = hints.get("return", Any)
    returns_response = is_response_type(returns)
    if returns_response:
        args = get_args(returns)
        returns = args[0] if args else Any
    returns_none = returns is None or returns is type(None)
    if not returns_none and returns is not Any:
        _check_returns(where, returns)
    return OperationSpec(
        name=attr,
        service=spec,
        params=tuple(specs),
        returns=returns,
        returns_response=returns_response,
        returns_none=returns_none,
        qualname=where,
    )


def _check_returns(where: str, returns: Any) -> None:
    """Refuse, when the class is decorated, a return annotation no answer could be written
    as JSON with: a type pydantic has no schema for, or ``object`` anywhere in it (pydantic
    accepts ``object`` as any value, then cannot serialise one)."""
    bare = _find_object(returns, set())
    if bare:
        raise CellDefinitionError(
            f"{where}: its return annotation {_type_name(returns)} contains {bare}, which has "
            "no JSON form: use a concrete type, a pydantic model, or Any"
        )
    try:
        TypeAdapter(returns).json_schema(mode="serialization")
    except (PydanticUndefinedAnnotation, PydanticUserError) as exc:
        if isinstance(exc, PydanticUndefinedAnnotation) or exc.code == "class-not-fully-defined":
            return  # a model it uses is defined later in the module: checked when served
        raise CellDefinitionError(
            f"{where}: its return annotation {_type_name(returns)} cannot be serialised as "
            f"JSON ({exc}): use JSON-able types or a pydantic model"
        ) from exc
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellDefinitionError(
            f"{where}: its return annotation {_type_name(returns)} cannot be serialised as "
            f"JSON ({first}): use JSON-able types or a pydantic model"
        ) from exc


def _find_object(tp: Any, seen: set[int]) -> str:
    """The name of the first ``object`` in ``tp``, its arguments or its models' fields."""
    if tp is object:
        return "object"
    if id(tp) in seen:
        return ""
    seen.add(id(tp))
    for arg in get_args(tp):
        if found := _find_object(arg, seen):
            return found
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if _find_object(field.annotation, seen):
                return f"object (in {tp.__name__}.{name})"
    return ""


def _param(
    where: str,
    spec: ServiceSpec,
    p: inspect.Parameter,
    hints: dict[str, Any],
    in_path: list[str],
) -> ParamSpec:
    name = p.name
    if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise CellDefinitionError(
            f"{where}: *{name} / **{name} cannot be bound from a request: declare each "
            "parameter by name"
        )
    if p.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise CellDefinitionError(f"{where}: parameter {name!r} must not be positional-only")
    if name not in hints:
        raise CellDefinitionError(
            f"{where}: parameter {name!r} has no type annotation: add one, e.g. `{name}: str`"
        )
    annotation = hints[name]
    default = REQUIRED if p.default is inspect.Parameter.empty else p.default
    marker: Header | Query | Body | None = None
    bare = annotation
    if get_origin(annotation) is Annotated:
        bare, *extras = get_args(annotation)
        markers = [m for m in extras if isinstance(m, (Header, Query, Body))]
        if len(markers) > 1:
            raise CellDefinitionError(f"{where}: parameter {name!r} has more than one marker")
        marker = markers[0] if markers else None

    if bare is web.Request or bare is web.BaseRequest:
        return ParamSpec(name, ParamSource.REQUEST, annotation, default, name)
    if bare is Caller:
        return ParamSpec(name, ParamSource.CALLER, annotation, default, name)

    if name in in_path:
        if marker is not None:
            raise CellDefinitionError(
                f"{where}: parameter {name!r} is in the path {spec.path!r} and cannot also be a "
                f"{type(marker).__name__}: rename one of them"
            )
        if default is not REQUIRED:
            raise CellDefinitionError(
                f"{where}: path parameter {name!r} cannot have a default: every request names it"
            )
        _check_scalar(where, name, bare, "path", allow_sequence=False)
        return ParamSpec(name, ParamSource.PATH, annotation, default, name)

    if isinstance(marker, Header):
        _check_scalar(where, name, bare, "header", allow_sequence=False)
        alias = marker.alias or name.replace("_", "-")
        return ParamSpec(name, ParamSource.HEADER, annotation, default, alias)
    if isinstance(marker, Body) or (marker is None and _is_model(bare)):
        return ParamSpec(name, ParamSource.BODY, annotation, default, name)
    alias = marker.alias if isinstance(marker, Query) and marker.alias else name
    _check_scalar(where, name, bare, "query", allow_sequence=True)
    return ParamSpec(name, ParamSource.QUERY, annotation, default, alias)


def strip_optional(tp: Any) -> Any:
    """``int | None`` → ``int``; ``Annotated[int | None, m]`` → ``Annotated[int, m]``."""
    if get_origin(tp) is Annotated:
        inner, *extras = get_args(tp)
        stripped = strip_optional(inner)
        if stripped is inner:
            return tp
        return Annotated[(stripped, *extras)]
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) != len(get_args(tp)):
            if len(members) == 1:
                return members[0]
            return Union[tuple(members)]  # noqa: UP007
    return tp


def is_response_type(tp: Any) -> bool:
    return tp is Response or get_origin(tp) is Response


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    tp = strip_optional(tp)
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_scalar(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        return _is_scalar(get_args(tp)[0])
    if get_origin(tp) is Literal:
        return True
    if _is_union(tp):
        return all(a is type(None) or _is_scalar(a) for a in get_args(tp))
    return tp is Any or (isinstance(tp, type) and issubclass(tp, _SCALARS))


def _check_scalar(where: str, name: str, tp: Any, source: str, *, allow_sequence: bool) -> None:
    inner = strip_optional(tp)
    if get_origin(inner) is Annotated:
        inner = get_args(inner)[0]
    if allow_sequence and get_origin(inner) in _SEQUENCES:
        args = [a for a in get_args(inner) if a is not Ellipsis]
        if all(_is_scalar(a) for a in args):
            return
    if _is_scalar(inner):
        return
    hint = (
        "use a pydantic model parameter for a JSON body"
        if source == "query"
        else "use str, int, float, bool, UUID, an Enum or a date type"
    )
    raise CellDefinitionError(
        f"{where}: {source} parameter {name!r} has type {_type_name(tp)}, which a {source} "
        f"string cannot carry: {hint}"
    )


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp).replace("typing.", "")
