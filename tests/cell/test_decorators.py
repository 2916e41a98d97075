"""@cell and @service declare, check early, and return the original objects."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from orchestro import Body, CellDefinitionError, Header, Query, cell, service, spec_of
from orchestro.cell import ParamSource


class Item(BaseModel):
    name: str


@cell("shop", port=9000, host="0.0.0.0", version="2.1.0")
class Shop:
    """Sells things."""

    @service.get("/items/{item_id}", timeout=2.5, tags=["items"])
    async def get_item(
        self,
        item_id: int,
        verbose: bool = False,
        tenant: Annotated[str | None, Header()] = None,
        sort: Annotated[str, Query(alias="order-by")] = "name",
    ) -> Item:
        """Fetch one item.

        Longer description.
        """
        return Item(name=f"item {item_id}")

    @service.post("/items", status=201)
    async def add(self, item: Item) -> Item:
        return item

    @service.put("/tags", summary="Replace tags")
    async def tags(self, tags: Annotated[list[str], Body()]) -> list[str]:
        return tags

    @service.delete("/items/{item_id}", internal=True)
    async def remove(self, item_id: int) -> None:
        return None


def test_cell_spec_records_the_declaration() -> None:
    spec = spec_of(Shop)
    assert (spec.name, spec.port, spec.host, spec.version) == ("shop", 9000, "0.0.0.0", "2.1.0")
    assert spec.description == "Sells things."
    assert [op.name for op in spec.operations] == ["get_item", "add", "tags", "remove"]
    assert spec_of(Shop()) is spec


def test_service_spec_records_options_and_docstring() -> None:
    op = spec_of(Shop).operation("get_item")
    assert op.service.method == "GET"
    assert op.service.timeout == 2.5
    assert op.service.summary == "Fetch one item."
    assert op.service.description == "Longer description."
    assert op.service.tags == ("items",)
    assert op.service.idempotent is True
    assert spec_of(Shop).operation("add").service.idempotent is False
    assert spec_of(Shop).operation("tags").service.summary == "Replace tags"
    assert spec_of(Shop).operation("remove").service.internal is True


def test_parameters_are_classified() -> None:
    op = spec_of(Shop).operation("get_item")
    got = {p.name: (p.source, p.alias, p.required) for p in op.params}
    assert got == {
        "item_id": (ParamSource.PATH, "item_id", True),
        "verbose": (ParamSource.QUERY, "verbose", False),
        "tenant": (ParamSource.HEADER, "tenant", False),
        "sort": (ParamSource.QUERY, "order-by", False),
    }
    assert spec_of(Shop).operation("add").body is not None
    assert spec_of(Shop).operation("tags").body is not None
    assert spec_of(Shop).operation("remove").returns_none


async def test_decorated_methods_stay_plain_methods() -> None:
    shop = Shop()
    assert await shop.get_item(3) == Item(name="item 3")
    assert Shop.__name__ == "Shop"


def test_spec_of_rejects_a_plain_class() -> None:
    with pytest.raises(TypeError, match=r"not a cell: decorate it with @cell"):
        spec_of(Item)


@pytest.mark.parametrize("name", ["Shop", "shop_1", "-shop", "", "a" * 64, "shop-"])
def test_bad_cell_names_are_refused(name: str) -> None:
    with pytest.raises(CellDefinitionError, match="lowercase letters"):
        cell(name)


def test_bad_port_is_refused() -> None:
    with pytest.raises(CellDefinitionError, match="port must be 0-65535"):
        cell("x", port=70000)


def _declare(body: str) -> None:
    namespace: dict[str, object] = {}
    source = (
        "from __future__ import annotations\n"
        "from typing import Annotated\n"
        "from pydantic import BaseModel\n"
        "from aiohttp import web\n"
        "from orchestro import cell, service, Header, Body\n"
        "class M(BaseModel):\n    x: int\n" + body
    )
    exec(compile(source, "<cell>", "exec"), namespace)


BAD_DECLARATIONS = {
    "sync method": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    def a(self) -> int: return 1\n",
        r"a: a service must be a coroutine method: write `async def a",
    ),
    "path without slash": (
        "@cell('c')\nclass C:\n    @service.get('a')\n    async def a(self) -> int: return 1\n",
        r"C.a: path 'a' must start with '/'",
    ),
    "reserved path": (
        "@cell('c')\nclass C:\n    @service.get('/healthz')\n    async def a(self) -> int: ...\n",
        r"C.a: path '/healthz' is reserved by the gateway",
    ),
    "reserved prefix": (
        "@cell('c')\nclass C:\n    @service.get('/_orchestro/x')\n    async def a(self): ...\n",
        r"is reserved by the gateway",
    ),
    "query in path": (
        "@cell('c')\nclass C:\n    @service.get('/a?x=1')\n    async def a(self) -> int: ...\n",
        r"must not contain '\?'",
    ),
    "partial placeholder": (
        "@cell('c')\nclass C:\n    @service.get('/a/x{y}')\n    async def a(self, y: int): ...\n",
        r"a placeholder must be a whole segment",
    ),
    "placeholder without parameter": (
        "@cell('c')\nclass C:\n    @service.get('/a/{a_id}')\n    async def a(self) -> int: ...\n",
        r"C.a: path '/a/\{a_id\}' names \{a_id\} but the method has no parameter 'a_id'",
    ),
    "missing annotation": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    async def a(self, q) -> int: ...\n",
        r"C.a: parameter 'q' has no type annotation: add one",
    ),
    "varargs": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    async def a(self, *q: int): ...\n",
        r"cannot be bound from a request",
    ),
    "two bodies": (
        "@cell('c')\nclass C:\n    @service.post('/a')\n    async def a(self, m: M, n: M): ...\n",
        r"C.a: has 2 body parameters \(m, n\)",
    ),
    "body on GET": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    async def a(self, m: M) -> int: ...\n",
        r"C.a: a GET request has no body",
    ),
    "model in header": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n"
        "    async def a(self, m: Annotated[M, Header()]): ...\n",
        r"header parameter 'm' has type M",
    ),
    "dict in query": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n"
        "    async def a(self, q: dict[str, int]): ...\n",
        r"query parameter 'q' has type .* use a pydantic model parameter for a JSON body",
    ),
    "path default": (
        "@cell('c')\nclass C:\n    @service.get('/a/{i}')\n"
        "    async def a(self, i: int = 1): ...\n",
        r"path parameter 'i' cannot have a default",
    ),
    "unresolvable hint": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    async def a(self, q: Nope): ...\n",
        r"C.a: cannot resolve the type hint 'Nope': import or define it before the class C",
    ),
    "duplicate route": (
        "@cell('c')\nclass C:\n    @service.get('/a/{x}')\n    async def a(self, x: int): ...\n"
        "    @service.get('/a/{y}')\n    async def b(self, y: int): ...\n",
        r"C: a and b both answer GET /a/\{y\}",
    ),
    "duplicate header": (
        "@cell('c')\nclass C:\n    @service.get('/a')\n    async def a(self, "
        "x_a: Annotated[str, Header()], y: Annotated[str, Header('X-A')]): ...\n",
        r"parameters 'x_a' and 'y' both read the header",
    ),
    "constructor arguments": (
        "@cell('c')\nclass C:\n    def __init__(self, db):\n        self.db = db\n",
        r"C: a cell is created with no arguments, but __init__ requires db",
    ),
    "sync hook": (
        "@cell('c')\nclass C:\n    def on_start(self): ...\n",
        r"C.on_start: must be a coroutine: write `async def on_start\(self\)`",
    ),
    "staticmethod": (
        "@cell('c')\nclass C:\n    @staticmethod\n    @service.get('/a')\n"
        "    async def a() -> int: ...\n",
        r"C.a: a service must be a plain method",
    ),
    "error status": (
        "@cell('c')\nclass C:\n    @service.get('/a', status=404)\n    async def a(self): ...\n",
        r"status=404 is not a success status",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DECLARATIONS))
def test_declaration_errors_name_the_place_and_the_fix(case: str) -> None:
    source, message = BAD_DECLARATIONS[case]
    with pytest.raises(CellDefinitionError, match=message):
        _declare(source)


def test_inherited_services_and_overrides() -> None:
    class Base:
        @service.get("/a")
        async def a(self) -> int:
            return 1

        @service.get("/b")
        async def b(self) -> int:
            return 2

    @cell("derived")
    class Derived(Base):
        async def b(self) -> int:  # no longer a service
            return 3

        @service.get("/c")
        async def c(self) -> int:
            return 4

    assert [op.name for op in spec_of(Derived).operations] == ["a", "c"]


async def test_the_reserved_paths_are_the_paths_the_gateway_serves_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cell layer cannot import the gateway's list: this pins that the two agree.
    from orchestro.cell import RESERVED_PATHS
    from orchestro.gateway import app
    from orchestro.host import listeners
    from orchestro.testing import CellClient

    served: set[str] = set()
    health_handlers, build_gateway = app.health_handlers, listeners.build_gateway

    def health(*args: Any, **kwargs: Any) -> Any:
        handlers = health_handlers(*args, **kwargs)
        served.update(handlers)
        return handlers

    def build(*args: Any, **kwargs: Any) -> Any:
        served.update(kwargs.get("own_routes") or {})
        return build_gateway(*args, **kwargs)

    monkeypatch.setattr(app, "health_handlers", health)
    monkeypatch.setattr(listeners, "build_gateway", build)

    @cell("plain")
    class Plain:
        @service.get("/hello")
        async def hello(self) -> str:
            return "hello"

    async with CellClient(Plain):
        pass
    assert served == RESERVED_PATHS
