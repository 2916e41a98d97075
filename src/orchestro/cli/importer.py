"""Find the cells named by a ``run`` target: ``pkg.module``, ``pkg.module:Cell`` or a file path.

An error in the target itself (no such file or module, no cells, unknown cell name) is one
readable :class:`TargetError`. An error raised while the user's own module runs (including an
``ImportError`` of something it imports) propagates untouched, traceback and all.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..cell.spec import CELL_ATTR, CellSpec
from ..errors import TargetError

__all__ = ["load_cells"]


def load_cells(target: str, names: Sequence[str] = ()) -> list[type[Any]]:
    """The ``@cell`` classes of ``target``, restricted to ``names`` when given."""
    module_part, _, attr = target.partition(":") if ":" in target else (target, "", "")
    if not module_part:
        raise TargetError(f"target {target!r} names no module: use pkg.module[:Cell] or path.py")
    module = _import(module_part)
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:
            found = ", ".join(sorted(c.__name__ for c in _cells_in(module))) or "none"
            raise TargetError(
                f"module {module.__name__!r} has no attribute {attr!r}; its cells: {found}"
            )
        if not isinstance(obj, type) or not isinstance(obj.__dict__.get(CELL_ATTR), CellSpec):
            raise TargetError(
                f'{module.__name__}:{attr} is not a cell: decorate the class with @cell("name")'
            )
        cells = [obj]
    else:
        cells = _cells_in(module)
        if not cells:
            raise TargetError(
                f"no cells in {module.__name__!r} ({getattr(module, '__file__', '?')}): decorate "
                'a class with @cell("name") and its methods with @service'
            )
    by_name: dict[str, type[Any]] = {}
    for cls in cells:
        name = cls.__dict__[CELL_ATTR].name
        if name in by_name and by_name[name] is not cls:
            raise TargetError(
                f"two cells in {target!r} are named {name!r} ({by_name[name].__qualname__} and "
                f"{cls.__qualname__}): rename one"
            )
        by_name[name] = cls
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise TargetError(
                f"no cell named {', '.join(map(repr, unknown))} in {target!r}; its cells: "
                f"{', '.join(sorted(by_name))}"
            )
        return [by_name[n] for n in dict.fromkeys(names)]
    return list(by_name.values())


def _cells_in(module: ModuleType) -> list[type[Any]]:
    """Cells defined in ``module`` or its submodules; cells it merely imports (to call them
    through the mesh, say) are not started."""
    prefix = module.__name__ + "."
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and isinstance(value.__dict__.get(CELL_ATTR), CellSpec)
            and (value.__module__ == module.__name__ or value.__module__.startswith(prefix))
        ):
            found.append(value)
    return found


def _import(spec: str) -> ModuleType:
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        return _import_file(Path(spec))
    if not all(part.isidentifier() for part in spec.split(".")):
        raise TargetError(
            f"target {spec!r} is neither a module name (pkg.module) nor a .py file path"
        )
    _prepend_path(Path.cwd())
    return _import_module(spec)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"file {str(path)!r} does not exist: check the path")
    if path.suffix != ".py":
        raise TargetError(f"file {str(path)!r} is not a Python file (.py)")
    path = path.resolve()
    # Import the file under its package's dotted name, so that the file and an ordinary
    # `import pkg.module` give the same module, and relative imports work.
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if not all(part.isidentifier() for part in parts):
        raise TargetError(
            f"file {str(path)!r} cannot be imported as {'.'.join(parts)!r}: rename it to a "
            "valid Python identifier"
        )
    _prepend_path(root)
    return _import_module(".".join(parts))


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise TargetError(
                f"cannot import {name!r}: there is no module {missing!r}; run from the "
                "directory that contains it, or pass the file's path"
            ) from exc
        raise  # raised inside the user's module: its traceback is the useful part


def _prepend_path(directory: Path) -> None:
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)
