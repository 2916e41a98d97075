"""Cells the gateway tests serve."""

from __future__ import annotations

import asyncio
import datetime
import enum
import uuid
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from orchestro import Body, Caller, Header, HTTPError, Query, Response, cell, service


class Color(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Line(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)


class Basket(BaseModel):
    owner: str
    lines: list[Line]


class Echo(BaseModel):
    values: dict[str, Any]


@cell("binder")
class Binder:
    @service.get("/items/{item_id}/{when}")
    async def path(self, item_id: int, when: datetime.date) -> Echo:
        return Echo(values={"item_id": item_id, "when": when.isoformat()})

    @service.get("/query")
    async def query(
        self,
        n: int,
        ratio: float = 0.5,
        flag: bool = False,
        color: Color | None = None,
        tags: list[str] | None = None,
        ids: Annotated[list[int], Query(alias="id")] = [],  # noqa: B006
        page: Annotated[int, Field(ge=1, le=10)] = 1,
    ) -> Echo:
        return Echo(
            values={
                "n": n,
                "ratio": ratio,
                "flag": flag,
                "color": color,
                "tags": tags,
                "ids": ids,
                "page": page,
            }
        )

    @service.get("/headers")
    async def headers(
        self,
        x_tenant: Annotated[str, Header()],
        trace: Annotated[uuid.UUID | None, Header("X-Trace")] = None,
    ) -> Echo:
        return Echo(values={"tenant": x_tenant, "trace": str(trace) if trace else None})

    @service.post("/baskets")
    async def basket(self, basket: Basket) -> Basket:
        return basket

    @service.put("/numbers")
    async def numbers(self, numbers: Annotated[list[int], Body()]) -> int:
        return sum(numbers)

    @service.patch("/optional")
    async def optional(self, basket: Basket | None = None) -> Echo:
        return Echo(values={"basket": basket.model_dump() if basket else None})

    @service.get("/defaults")
    async def defaults(self, request: web.Request, limit: int = 10, tag: str | None = None) -> Echo:
        return Echo(values={"limit": limit, "tag": tag, "path": request.path})

    @service.get("/raw")
    async def raw(self, request: web.Request) -> Echo:
        return Echo(values={"path": request.path, "method": request.method})


class Aliased(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)
    unit_price: int = Field(alias="unitPrice")


class Deferred(BaseModel):
    model_config = ConfigDict(defer_build=True, serialize_by_alias=True)
    unit_price: int = Field(alias="unitPrice")


@cell("answers")
class Answers:
    @service.get("/model")
    async def model(self) -> Line:
        return Line(sku="tea", quantity=2)

    @service.get("/aliased")
    async def aliased(self) -> Aliased:
        return Aliased(unitPrice=3)

    @service.get("/deferred")
    async def deferred(self) -> Deferred:
        return Deferred(unitPrice=4)

    @service.get("/plain")
    async def plain(self) -> dict[str, Any]:
        return {"when": datetime.date(2024, 5, 6), "n": [1, 2]}

    @service.get("/untyped")
    async def untyped(self):  # type: ignore[no-untyped-def]
        return [Line(sku="a", quantity=1)]

    @service.delete("/nothing")
    async def nothing(self) -> None:
        return None

    @service.post("/created", status=201)
    async def created(self, line: Line) -> Line:
        return line

    @service.post("/explicit")
    async def explicit(self) -> Response[Line]:
        return Response(
            Line(sku="x", quantity=1), status=202, headers={"Location": "/lines/x", "X-A": "1"}
        )

    @service.get("/text")
    async def text(self) -> Response[str]:
        return Response("plain words", media_type="text/plain; charset=utf-8")

    @service.get("/bytes")
    async def binary(self) -> Response[bytes]:
        return Response(b"\x00\x01", headers={"Cache-Control": "no-store"})

    @service.get("/maybe")
    async def maybe(self, present: bool) -> Line | None:
        return Line(sku="y", quantity=3) if present else None


@cell("failures")
class Failures:
    @service.get("/teapot")
    async def teapot(self) -> None:
        raise HTTPError(
            418, "short and stout", title="I'm a teapot", headers={"X-Why": "tea"}, spout=1
        )

    @service.get("/boom")
    async def boom(self) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    @service.get("/validation-in-code")
    async def validation_in_code(self) -> None:
        Line.model_validate({"sku": ""})  # a bug in the service: 500, not 422

    @service.get("/slow", timeout=0.05)
    async def slow(self) -> None:
        await asyncio.sleep(10)

    @service.get("/own-timeout", timeout=5)
    async def own_timeout(self) -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    @service.get("/redirect")
    async def redirect(self) -> None:
        raise web.HTTPFound("/elsewhere")

    @service.post("/audit", internal=True)
    async def audit(self, line: Line, caller: Caller) -> dict[str, Any]:
        return {"line": line, "caller": caller.cell}

    @service.get("/whoami")
    async def whoami(self, caller: Caller) -> str | None:
        return caller.cell
