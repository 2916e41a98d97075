"""Find the cells named by a ``run`` target: ``pkg.module``, ``pkg.module:Cell`` or a file path.

An error in the target itself (no such file or module, no cells, unknown cell name) is one
readable :class:`TargetError`. An error raised while the user's own module runs (a
``SyntaxError``, an ``ImportError`` of something it imports, any exception) is a
:class:`UserModuleError` whose message is the traceback of the user's own frames only (no
importlib, runpy or orchestro frames) and the one-line cause; the original exception is its
``__cause__``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..cell.spec import CELL_ATTR, CellSpec
from ..errors import OrchestroError, TargetError, UserModuleError

__all__ = ["load_cells"]

# Frames of these files are the machinery of an import, not the user's code.
_MACHINERY = (
    str(Path(__file__).resolve().parent.parent),  # orchestro
    str(Path(importlib.__file__).resolve().parent),  # importlib
)


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
            hint = (
                "; for a package, import the modules that define its cells in its __init__.py "
                f"(from . import accounts) or name one: {module.__name__}.accounts"
                if hasattr(module, "__path__")
                else ""
            )
            raise TargetError(
                f"no cells in {module.__name__!r} ({getattr(module, '__file__', '?')}): decorate "
                f'a class with @cell("name") and its methods with @service{hint}'
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
    through the mesh, say) are not started.

    For a package, its submodules that are imported once it is (``from . import accounts``
    in ``__init__.py``) are searched too, so a package's cells need not be re-exported.
    """
    prefix = module.__name__ + "."
    namespaces = [vars(module)]
    if hasattr(module, "__path__"):  # a package
        namespaces += [
            vars(sub)
            for name, sub in list(sys.modules.items())
            if name.startswith(prefix) and isinstance(sub, ModuleType)
        ]
    found: dict[int, type[Any]] = {}
    for namespace in namespaces:
        for value in namespace.values():
            if (
                isinstance(value, type)
                and isinstance(value.__dict__.get(CELL_ATTR), CellSpec)
                and (value.__module__ == module.__name__ or value.__module__.startswith(prefix))
            ):
                found.setdefault(id(value), value)
    return list(found.values())


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
        raise UserModuleError(_user_traceback(name, exc)) from exc
    except OrchestroError:
        raise  # a CellDefinitionError, say: already one line naming the problem
    except Exception as exc:
        raise UserModuleError(_user_traceback(name, exc)) from exc


def _user_traceback(name: str, exc: BaseException) -> str:
    """The traceback of ``exc`` without the frames of the import machinery and orchestro."""
    report = traceback.TracebackException.from_exception(exc)
    frames = [f for f in report.stack if _is_users(f.filename)]
    lines = [f"importing {name!r} raised {type(exc).__name__}:\n"]
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.StackSummary.from_list(frames).format()
    lines += report.format_exception_only()
    return "".join(lines).rstrip("\n")


def _is_users(filename: str) -> bool:
    return not (
        filename.startswith("<frozen ")
        or filename.startswith(_MACHINERY)
        or Path(filename).name == "runpy.py"
    )


def _prepend_path(directory: Path) -> None:
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)
