"""The cell's OpenAPI 3.1 document, built once from its specs and pydantic schemas.

The document tells the truth about what the gateway does: every status the gateway itself can
answer with is listed (422 for invalid input, 415/413/400 for bodies, 503 while not ready),
parameters carry the schemas their validators use, and internal services are left out.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pydantic_core
from pydantic import TypeAdapter

from ..cell.signature import strip_optional
from ..cell.spec import CellSpec, OperationSpec, ParamSource
from .problem import PROBLEM_JSON, PROBLEM_SCHEMA

__all__ = ["build_openapi"]

_REF_TEMPLATE = "#/components/schemas/{model}"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    404: "No such resource.",
    413: "The body is larger than the gateway's limit.",
    401: "A bearer token is missing or invalid; `WWW-Authenticate` says why.",
    415: "The body is not JSON.",
    422: "An input is invalid; `errors` lists each one.",
    429: "The caller's rate limit is spent; retry after `Retry-After` (see `RateLimit`).",
    500: "The service failed unexpectedly; `request_id` finds the cause in the log.",
    503: "The cell is starting, draining or at its concurrency limit; retry after `Retry-After`.",
    504: "The service did not answer within its timeout.",
}


def build_openapi(spec: CellSpec) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``spec``'s public services."""
    public = [op for op in spec.operations if not op.service.internal]
    inputs: list[tuple[Hashable, Any, TypeAdapter[Any]]] = []
    for op in public:
        for param in op.params:
            if param.source in (ParamSource.REQUEST, ParamSource.CALLER):
                continue
            tp = param.annotation if param.source is ParamSource.BODY else _param_type(param)
            inputs.append(((op.name, param.name), "validation", TypeAdapter(tp)))
        if op.returns is not Any and not op.returns_none:
            inputs.append(((op.name, "<return>"), "serialization", TypeAdapter(op.returns)))
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
    components: dict[str, Any] = dict(definitions.get("$defs", {}))
    components["Problem"] = PROBLEM_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for op in public:
        item = paths.setdefault(op.service.path, {})
        item[op.service.method.lower()] = _operation(spec, op, schemas)

    info: dict[str, Any] = {"title": spec.name, "version": spec.version}
    if spec.description:
        info["description"] = spec.description
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }
    if any(_schemes(spec, op) for op in public):
        # `auth=` services (docs/concepts/edge.md): a JWT or an API key, as a bearer token.
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "A JWT or an API key."}
        }
    return document


def _schemes(spec: CellSpec, op: OperationSpec) -> tuple[str, ...]:
    return op.service.auth if op.service.auth is not None else spec.auth


def _param_type(param: Any) -> Any:
    # An optional parameter is omitted, never sent as null: document the non-null type.
    return strip_optional(param.annotation) if param.default is None else param.annotation


def _operation(
    spec: CellSpec, op: OperationSpec, schemas: dict[tuple[Hashable, Any], Any]
) -> dict[str, Any]:
    svc = op.service
    out: dict[str, Any] = {"operationId": op.name, "tags": [spec.name, *svc.tags]}
    if svc.summary:
        out["summary"] = svc.summary
    if svc.description:
        out["description"] = svc.description
    if svc.deprecated:
        out["deprecated"] = True

    parameters: list[dict[str, Any]] = []
    for param in op.params:
        if param.source not in (ParamSource.PATH, ParamSource.QUERY, ParamSource.HEADER):
            continue
        schema = dict(schemas[((op.name, param.name), "validation")])
        if not param.required:
            default = _jsonable(param.default)
            if default is not None:
                schema["default"] = default
        parameters.append(
            {
                "name": param.alias,
                "in": param.source.value,
                "required": param.required or param.source is ParamSource.PATH,
                "schema": schema,
            }
        )
    if parameters:
        out["parameters"] = parameters

    body = op.body
    if body is not None:
        out["requestBody"] = {
            "required": body.required,
            "content": {
                "application/json": {"schema": schemas[((op.name, body.name), "validation")]}
            },
        }

    responses: dict[str, Any] = {}
    ok_schema = schemas.get(((op.name, "<return>"), "serialization"), {})
    if op.returns_none:
        responses[str(svc.status or 204)] = {"description": "Done; no content."}
    else:
        responses[str(svc.status or 200)] = {
            "description": "Success.",
            "content": {"application/json": {"schema": ok_schema}},
        }
        if _allows_none(op.returns) and not svc.status:
            responses["204"] = {"description": "No content."}
    errors: set[int] = {500, 503}
    if any(p.source not in (ParamSource.REQUEST, ParamSource.CALLER) for p in op.params):
        errors.add(422)
    if body is not None:
        errors.update({400, 413, 415})
    if any(p.source is ParamSource.PATH for p in op.params):
        errors.add(404)
    if svc.timeout is not None:
        errors.add(504)
    if _schemes(spec, op):
        errors.add(401)
        out["security"] = [{"bearer": []}]
    limit = svc.rate_limit if svc.rate_limit is not None else spec.rate_limit
    if limit is not None and not limit.unlimited:
        errors.add(429)
    described = {**{code: _DESCRIPTIONS[code] for code in errors}, **svc.responses}
    for code in sorted(described):
        entry: dict[str, Any] = {"description": described[code]}
        if code < 400 and code != 204 and not op.returns_none:
            entry["content"] = {"application/json": {"schema": ok_schema}}
        elif code >= 400:
            entry["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
        responses[str(code)] = entry
    out["responses"] = responses
    return out


def _allows_none(tp: Any) -> bool:
    return strip_optional(tp) is not tp


def _jsonable(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value)
    except Exception:
        return None
