"""Typed stubs: a ``@cell`` class's services, called through the mesh.

``mesh.client(Greeter)`` returns an object whose methods have the service methods' names and
parameters; calling one validates the arguments with the same types the callee binds them
with (path, query, header and body alike: a ``ValidationError`` before anything is sent),
sends the request through :meth:`Mesh.call`, and validates the answer into the method's
return type. A service's own ``idempotent`` and ``timeout`` apply.

A call to a cell hosted in this process keeps the same contract without a socket: the
arguments and the answer are copies (a JSON round trip through the callee's types, as over
HTTP), so neither side can change the other's objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from ..cell.signature import strip_optional
from ..cell.spec import OperationSpec, ParamSource, spec_of
from ..errors import CallError, ConfigurationError
from .calls import Calls
from .policy import CallPolicy
from .raw import text as _text
from .transports.base import CallRequest, CallResponse

__all__ = ["build_stub"]


def build_stub(
    mesh: Calls,
    cls: type[Any],
    policy: CallPolicy | None,
    fallbacks: dict[str, Callable[..., Any]] | None = None,
) -> Any:
    spec = spec_of(cls)
    fallbacks = fallbacks or {}
    unknown = set(fallbacks) - {op.name for op in spec.operations}
    if unknown:
        raise ConfigurationError(
            f"mesh.client({cls.__qualname__}): fallback for unknown service(s) "
            f"{', '.join(sorted(unknown))}; its services: "
            f"{', '.join(op.name for op in spec.operations)}"
        )
    methods = {
        op.name: _with_fallback(_method(mesh, spec.name, cls, op, policy), fallbacks.get(op.name))
        for op in spec.operations
    }
    stub_type = type(f"{cls.__name__}Stub", (), {"__slots__": (), "cell": spec.name, **methods})
    return stub_type()


def _with_fallback(
    call: Callable[..., Awaitable[Any]], fallback: Callable[..., Any] | None
) -> Callable[..., Awaitable[Any]]:
    if fallback is None:
        return call

    async def with_fallback(stub: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await call(stub, *args, **kwargs)
        except CallError as exc:
            value = fallback(exc, *args, **kwargs)
            return await value if inspect.isawaitable(value) else value

    with_fallback.__name__ = call.__name__
    with_fallback.__qualname__ = call.__qualname__
    with_fallback.__doc__ = call.__doc__
    return with_fallback


def _method(
    mesh: Calls, cell: str, cls: type[Any], op: OperationSpec, policy: CallPolicy | None
) -> Callable[..., Awaitable[Any]]:
    signature = inspect.signature(getattr(cls, op.name))
    params = [p for p in op.params if p.source not in (ParamSource.REQUEST, ParamSource.CALLER)]
    adapters = {
        p.name: TypeAdapter(p.annotation if p.default is not None else strip_optional(p.annotation))
        for p in params
    }
    result = None if op.returns_none else TypeAdapter(op.returns)
    svc = op.service
    policy = policy or mesh.policy_for(cell, op.name)
    if svc.timeout is not None and svc.timeout < policy.timeout:
        policy = policy.model_copy(update={"timeout": svc.timeout})
    local_timeout = policy.timeout
    wire = {p.name for p in params}

    names = frozenset(signature.parameters) - {"self"}

    def decode(answer: CallResponse) -> Any:
        if result is None or answer.status == 204 or not answer.body:
            return None
        return result.validate_json(answer.body)

    def decode_local(answer: Any) -> Any:
        if result is None or answer is None:
            return None
        # A copy, as over HTTP: the caller must not hold the callee's own objects.
        return _copy(result, result.validate_python(answer))

    # Not a coroutine function: it returns the mesh's own coroutine, which decodes the answer
    # itself, so awaiting a stub method adds no coroutine layer of its own (each layer costs
    # on every suspension inside the HTTP client).
    plain: list[CallRequest] = []  # the request of a call with no arguments, made once

    def call(_stub: Any, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        # Keyword calls skip Signature.bind (microseconds) when the names are right.
        if not args and names.issuperset(kwargs):
            bound = kwargs
        else:
            bound = signature.bind(None, *args, **kwargs).arguments
        host = mesh.local_host(cell)
        if host is not None:
            # In this process: validated with the callee's types, called directly.
            # Copies, as over HTTP: the callee must not change the caller's objects.
            arguments = (
                {
                    name: _copy(adapters[name], adapters[name].validate_python(value))
                    for name, value in bound.items()
                    if name in wire
                }
                if bound
                else {}
            )
            return mesh.call_local(
                cell,
                host,
                op.name,
                arguments,
                local_timeout,
                decode_local,
                svc.method,
                policy,
                remote,
                bound,
            )
        return remote(bound)

    def remote(bound: Mapping[str, Any]) -> Awaitable[Any]:
        """The call over the remote pipeline (HTTP), its arguments checked and encoded."""
        if not bound and plain:
            return mesh.call(cell, plain[0], policy, decode)
        path = svc.path
        query: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        body = None
        for p in params:
            if p.name not in bound:
                continue
            value = bound[p.name]
            if value is None and p.source is not ParamSource.BODY:
                continue  # optional and omitted: the callee applies its default
            adapter = adapters[p.name]
            if p.source is ParamSource.BODY:
                body = adapter.dump_json(adapter.validate_python(value))
                headers["Content-Type"] = "application/json"
                continue
            # Checked with the callee's types before sending, as the local path does.
            value = adapter.validate_python(value)
            if p.source is ParamSource.PATH:
                path = path.replace("{" + p.name + "}", quote(_text(value), safe=""))
            elif p.source is ParamSource.HEADER:
                headers[p.alias] = _text(value)
            else:
                values = value if isinstance(value, list | tuple | set | frozenset) else [value]
                query.extend((p.alias, _text(v)) for v in values)
        request = CallRequest(svc.method, path, query, headers, body, svc.idempotent, None, op.name)
        if not bound:
            plain.append(request)  # nothing in it varies from call to call
        return mesh.call(cell, request, policy, decode)

    call.__name__ = op.name
    call.__qualname__ = f"{cls.__name__}Stub.{op.name}"
    call.__doc__ = f"Call {cell}'s {svc.method} {svc.path} through the mesh."
    return call


_IMMUTABLE = frozenset({int, float, str, bool, bytes, type(None)})


def _copy(adapter: TypeAdapter[Any], value: Any) -> Any:
    """``value`` as the other side of an HTTP call would get it: a JSON round trip through
    its type (immutable scalars as they are)."""
    if type(value) in _IMMUTABLE:
        return value
    return adapter.validate_json(adapter.dump_json(value))
