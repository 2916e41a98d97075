"""What a service returns, and how it becomes an HTTP answer.

A service returns a pydantic model or any JSON-able value (200, or the ``status`` its
decorator names), ``None`` (204), or a :class:`Response` when it chooses the status and
headers itself. The answer must fit the return annotation, as FastAPI's response model: a
value that does not (``-> int`` returning ``"ten"``) is a 500, logged naming the method and
what is wrong, never served as if it were right::

    @service.post("/orders")
    async def create(self, order: NewOrder) -> Response[Order]:
        saved = self.store.add(order)
        return Response(saved, status=201, headers={"Location": f"/orders/{saved.id}"})
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..cell.response import Response
from ..cell.spec import OperationSpec
from ..errors import HTTPError

__all__ = ["Response", "renderer"]

_JSON = "application/json"
_log = logging.getLogger("orchestro.gateway")


def renderer(op: OperationSpec) -> Callable[[Any], web.Response]:
    """Build, once per operation, the function that turns its return value into an answer."""
    model, plain, dump = _dumps(op)
    ok = op.service.status or 200
    empty = op.service.status or 204

    def render_response(result: Response[Any]) -> web.Response:
        content = result.content
        headers = dict(result.headers)
        if content is None:
            return web.Response(status=result.status, headers=headers)
        if isinstance(content, bytes | str):
            if result.media_type is None:
                media = "text/plain" if isinstance(content, str) else "application/octet-stream"
            else:
                media = result.media_type
            body = content.encode() if isinstance(content, str) else content
            headers.setdefault("Content-Type", media)
            return web.Response(status=result.status, body=body, headers=headers)
        headers.setdefault("Content-Type", result.media_type or _JSON)
        body = plain(content) if content.__class__ is model else dump(content)
        return web.Response(status=result.status, body=body, headers=headers)

    def render(result: Any) -> web.Response:
        if result.__class__ is model:  # the hot path: the annotated model, no validation
            return web.Response(status=ok, body=plain(result), content_type=_JSON)
        if isinstance(result, Response):
            return render_response(result)
        if result is None:
            return web.Response(status=empty)
        return web.Response(status=ok, body=dump(result), content_type=_JSON)

    return render


def _dumps(
    op: OperationSpec,
) -> tuple[type[Any] | None, Callable[[Any], bytes], Callable[[Any], bytes]]:
    """``(model, plain, checked)``: the annotated model class (or ``None``), the serializer
    for an instance of exactly that class, and the function that checks any other value
    against the return annotation, as FastAPI's response model does: it is validated (lax: a
    dict for a model, "5" for an int) and serialised, or refused with a logged 500.

    An instance of the annotated model class needs no validation, so the hot path is one
    class comparison and the model's own serializer, as before. (``to_json(...,
    warnings="error")`` would check without validating, but passing that option costs 2-3
    µs per call, more than serialising a small model.)
    """
    where = op.qualname or op.name
    if op.returns is Any or op.returns_none:

        def dump_any(value: Any) -> bytes:
            try:
                return pydantic_core.to_json(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise _wrong_answer(where, "Any", str(exc)) from exc

        return None, dump_any, dump_any
    adapter: TypeAdapter[Any] = TypeAdapter(op.returns)
    # The serializer itself: TypeAdapter.dump_json only passes it its default options, and
    # the wrapper costs twice the serialisation of a small model. (A deferred build leaves
    # a stand-in until first use: then the wrapper it is.)
    serializer = adapter.serializer
    to_json: Callable[[Any], bytes] = (
        serializer.to_json
        if isinstance(serializer, pydantic_core.SchemaSerializer)
        else adapter.dump_json
    )
    validate = adapter.validate_python
    annotation = _type_name(op.returns)
    model = (
        op.returns if isinstance(op.returns, type) and issubclass(op.returns, BaseModel) else None
    )

    def checked(value: Any) -> bytes:
        try:
            return to_json(validate(value, from_attributes=True))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']} (got {e['input']!r:.80})"
                for e in exc.errors(include_url=False)[:3]
            )
            raise _wrong_answer(where, annotation, problems) from exc
        except pydantic_core.PydanticSerializationError as exc:
            raise _wrong_answer(where, annotation, str(exc)) from exc

    return model, to_json, checked


def _wrong_answer(where: str, annotation: str, problem: str) -> HTTPError:
    _log.error(
        "%s returned a value that does not match its return annotation %s: %s",
        where,
        annotation,
        problem,
        extra={"operation": where},
    )
    return HTTPError(
        500,
        "the service's answer does not match its declared type; the cause is in the cell's log",
    )


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp).replace("typing.", "")
