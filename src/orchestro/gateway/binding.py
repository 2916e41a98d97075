"""Bind a request to a service method's arguments, validating every value with pydantic.

One :class:`Binder` is compiled per operation at start-up. It reads each parameter from its
place (path, query, header, body), validates them all, and raises one :class:`HTTPError` that
lists every failing field (422), or names the one transport problem (400 malformed JSON,
413 body too large, 415 not JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, get_args, get_origin

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from ..cell.signature import strip_optional
from ..cell.spec import OperationSpec, ParamSource, ParamSpec
from ..errors import HTTPError
from ..security.identity import IdentityResolver, anonymous, caller_of

__all__ = ["Binder"]

_SEQUENCES: Final = (list, set, frozenset, tuple)
_MISSING: Final = object()

# A reader takes the request and its path parameters and returns the raw value or _MISSING.
_Reader = Callable[[web.BaseRequest, Mapping[str, str]], Any]


def _error_list(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _missing(loc: list[str | int]) -> dict[str, Any]:
    return {"loc": loc, "msg": "Field required", "type": "missing"}


class Binder:
    """Reads and validates the arguments of one operation from a request."""

    def __init__(
        self, op: OperationSpec, *, max_body_size: int, identity: IdentityResolver = anonymous
    ) -> None:
        self._op = op
        self._identity = identity
        self._max_body_size = max_body_size
        self._simple: list[tuple[ParamSpec, _Reader, TypeAdapter[Any]]] = []
        self._request_params = [p.name for p in op.params if p.source is ParamSource.REQUEST]
        self._caller_params = [p.name for p in op.params if p.source is ParamSource.CALLER]
        self._body = op.body
        self._body_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(op.body.annotation) if op.body is not None else None
        )
        for param in op.params:
            if param.source in (ParamSource.PATH, ParamSource.QUERY, ParamSource.HEADER):
                self._simple.append((param, _raw_reader(param), TypeAdapter(_value_type(param))))
        # A request without a query string, to an operation whose simple parameters are all
        # optional query parameters (a common GET), binds to their defaults without reading
        # the query.
        self._absent: dict[str, Any] | None = None
        if all(p.source is ParamSource.QUERY and not p.required for p, _, _ in self._simple):
            self._absent = {p.name: p.default for p, _, _ in self._simple}
        self._plain = not self._request_params and not self._caller_params

    @property
    def needs_body(self) -> bool:
        return self._body is not None

    def bind(self, request: web.BaseRequest, path: Mapping[str, str]) -> dict[str, Any]:
        """The arguments of an operation without a body (no I/O, so no coroutine)."""
        if self._absent is not None and "?" not in request.raw_path:
            defaults = self._absent.copy()
            return defaults if self._plain else self._finish(request, defaults, [])
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        self._bind_simple(request, path, values, errors)
        return self._finish(request, values, errors)

    async def bind_with_body(
        self, request: web.BaseRequest, path: Mapping[str, str]
    ) -> dict[str, Any]:
        """The arguments of an operation with a body, read and validated too."""
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        self._bind_simple(request, path, values, errors)
        await self._bind_body(request, values, errors)
        return self._finish(request, values, errors)

    def _bind_simple(
        self,
        request: web.BaseRequest,
        path: Mapping[str, str],
        values: dict[str, Any],
        errors: list[dict[str, Any]],
    ) -> None:
        for param, read, adapter in self._simple:
            raw = read(request, path)
            if raw is _MISSING:
                if param.required:
                    errors.append(_missing([param.source.value, param.alias]))
                else:
                    values[param.name] = param.default
                continue
            try:
                if isinstance(raw, list):
                    values[param.name] = adapter.validate_python(raw)
                else:
                    values[param.name] = adapter.validate_strings(raw)
            except ValidationError as exc:
                errors.extend(_error_list(exc, (param.source.value, param.alias)))

    def _finish(
        self, request: web.BaseRequest, values: dict[str, Any], errors: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if errors:
            count = len(errors)  # the errors listed, not the fields they are in
            raise HTTPError(
                422,
                f"{count} invalid input{'s' if count != 1 else ''}: see errors",
                errors=errors,
            )
        for name in self._request_params:
            values[name] = request
        for name in self._caller_params:
            values[name] = caller_of(request, self._identity)
        return values

    async def _bind_body(
        self, request: web.BaseRequest, values: dict[str, Any], errors: list[dict[str, Any]]
    ) -> None:
        param = self._body
        assert param is not None
        assert self._body_adapter is not None
        length = request.content_length
        if length is not None and length > self._max_body_size:
            raise _too_large(self._max_body_size)
        if not request.body_exists:
            if param.required:
                errors.append(_missing(["body"]))
            else:
                values[param.name] = param.default
            return
        ctype = request.content_type
        if ctype != "application/json" and not ctype.endswith("+json"):
            sent = request.headers.get("Content-Type")
            raise HTTPError(
                415,
                f"the body must be JSON (Content-Type: application/json), not "
                f"{sent if sent else 'a body without Content-Type'}",
                headers={"Accept-Post": "application/json"} if request.method == "POST" else None,
            )
        await _continue(request)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise _too_large(self._max_body_size) from exc
        if not raw:
            if param.required:
                errors.append(_missing(["body"]))
            else:
                values[param.name] = param.default
            return
        try:
            values[param.name] = self._body_adapter.validate_json(raw)
        except ValidationError as exc:
            bad_json = [e for e in exc.errors(include_url=False) if e["type"] == "json_invalid"]
            if bad_json:
                reason = bad_json[0].get("ctx", {}).get("error", bad_json[0]["msg"])
                raise HTTPError(400, f"the body is not valid JSON: {reason}") from exc
            errors.extend(_error_list(exc, ("body",)))


async def _continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` once the request passed every check before its body."""
    expect = request.headers.get("Expect")
    if expect is None or request.version < (1, 1):
        return
    if expect.lower() != "100-continue":
        raise HTTPError(417, f"unknown Expect: {expect}; only 100-continue is supported")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper has not started yet


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"the body is larger than the limit of {limit} bytes")


def _value_type(param: ParamSpec) -> Any:
    # A missing optional parameter takes its default; a present one is never null.
    return strip_optional(param.annotation) if param.default is None else param.annotation


def _is_sequence(tp: Any) -> bool:
    tp = strip_optional(tp)
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return get_origin(tp) in _SEQUENCES


def _raw_reader(param: ParamSpec) -> _Reader:
    alias = param.alias
    if param.source is ParamSource.PATH:
        return lambda request, path: path[alias]
    if param.source is ParamSource.HEADER:
        return lambda request, path: request.headers.get(alias, _MISSING)
    if _is_sequence(param.annotation):

        def read_all(request: web.BaseRequest, path: Mapping[str, str]) -> Any:
            found = request.query.getall(alias, None)
            return list(found) if found else _MISSING

        return read_all

    def read_one(request: web.BaseRequest, path: Mapping[str, str]) -> Any:
        query = request.query
        if alias not in query:
            return _MISSING
        found = query.getall(alias)
        return found[-1]  # the last of repeated keys wins, as in most frameworks

    return read_one
