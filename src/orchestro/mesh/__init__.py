"""The mesh client: typed calls to other cells, with balancing, deadlines, retries within a
budget, and outlier ejection.

This module is what ``from orchestro import mesh`` gives. Inside a cell, declare a client as
a class attribute; the cell's host binds it to the process's mesh::

    @cell("frontend")
    class Frontend:
        greeter = mesh.client(Greeter)      # typed stub; mesh.client("greeter") is raw

        @service.get("/hello/{name}")
        async def hello(self, name: str) -> Greeting:
            return await self.greeter.greet(name=name)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar, overload

from ..errors import ConfigurationError
from .core import Fallback, Mesh
from .policy import CallPolicy, Policies
from .raw import RawClient

__all__ = [
    "MESH_ATTR",
    "CallPolicy",
    "Mesh",
    "Policies",
    "RawClient",
    "callee_name",
    "client",
    "clients_of",
]

T = TypeVar("T")
MESH_ATTR: Final = "__orchestro_mesh__"


class _ClientAttribute(Generic[T]):
    """A class attribute that becomes a stub bound to the instance's mesh."""

    def __init__(
        self, target: Any, policy: CallPolicy | None, fallback: Mapping[str, Fallback] | None
    ) -> None:
        self.target = target
        self.policy = policy
        self.fallback = fallback
        self.name = "client"

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        bound: Mesh | None = instance.__dict__.get(MESH_ATTR)
        if bound is None:
            raise ConfigurationError(
                f"{type(instance).__qualname__}.{self.name}: this cell has no mesh; run it with "
                "`orchestro run` (or CellClient(..., mesh=...) in tests), or replace the client: "
                f"make_cell({type(instance).__qualname__}, {self.name}=fake)"
            )
        return bound.client(self.target, policy=self.policy, fallback=self.fallback)


@overload
def client(
    target: type[T],
    *,
    policy: CallPolicy | None = None,
    fallback: Mapping[str, Fallback] | None = None,
) -> T: ...


@overload
def client(
    target: str,
    *,
    policy: CallPolicy | None = None,
    fallback: Mapping[str, Fallback] | None = None,
) -> RawClient: ...


def client(
    target: Any,
    *,
    policy: CallPolicy | None = None,
    fallback: Mapping[str, Fallback] | None = None,
) -> Any:
    """Declare, as a class attribute of a cell, a client of another cell: typed for a
    ``@cell`` class, raw for a cell name or an http(s) URL. See :meth:`Mesh.client`."""
    return _ClientAttribute(target, policy, fallback)


def clients_of(cls: type[Any]) -> dict[str, Any]:
    """What a ``@cell`` class calls, as its ``mesh.client(...)`` attributes declare it:
    attribute name -> the target as declared (a ``@cell`` class, a cell name, or an
    http(s) URL), its own and its bases' (the most derived definition winning). This is the
    call graph ``orchestro policy`` prints, ``--policy strict`` enforces and ``orchestro
    deploy`` derives network policy from.

    ```python
    assert clients_of(Teller) == {"vault": Vault}
    ```
    """
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, _ClientAttribute):
                found[name] = value.target
            else:
                found.pop(name, None)  # overridden by something else in a subclass
    return found


def callee_name(target: Any) -> str | None:
    """The cell name a client's target names (``None`` for an http(s) URL)."""
    if isinstance(target, str):
        return None if "://" in target else target
    from ..cell.spec import spec_of

    return spec_of(target).name
