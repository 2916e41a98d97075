"""Build a cell instance with some of its attributes (dependencies) replaced."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from ..cell.spec import spec_of
from ..errors import ConfigurationError

__all__ = ["make_cell"]

T = TypeVar("T")


def make_cell(cls: type[T], /, **replacements: Any) -> T:
    """Create ``cls`` (a ``@cell`` class) and replace the named attributes on the instance.

    ```python
    shop = make_cell(Shop, payments=FakePayments(), clock=lambda: 0.0)
    async with CellClient(shop) as client: ...
    ```

    Only attributes the class or a fresh instance has can be replaced, so a typo fails loudly
    instead of leaving the real dependency in place. ``on_start`` is not run here: the test
    client runs it, or a unit test may call it.
    """
    spec_of(cls)  # raises TypeError for a class that is not a cell
    instance = cls()
    missing = object()
    for name, value in replacements.items():
        # Looked up statically: reading a mesh client of a cell with no mesh raises (that is
        # what the replacement is for), and no other descriptor should run here either.
        if inspect.getattr_static(instance, name, missing) is missing:
            raise ConfigurationError(
                f"make_cell({cls.__qualname__}, {name}=...): {cls.__qualname__} has no "
                f"attribute {name!r} to replace"
            )
        setattr(instance, name, value)
    return instance
