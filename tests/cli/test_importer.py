"""Targets: pkg.module, pkg.module:Cell, path/to/file.py — and readable errors for bad ones."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestro import TargetError, spec_of
from orchestro.cli.importer import load_cells
from orchestro.errors import UserModuleError

CELLS = """
from orchestro import cell, service

@cell("alpha")
class Alpha:
    @service.get("/a")
    async def a(self) -> int:
        return 1

@cell("beta")
class Beta:
    pass
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's project directory, as the current directory, cleaned from sys.modules after."""
    pkg = tmp_path / "proj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cells.py").write_text(CELLS)
    (pkg / "uses.py").write_text("from proj.cells import Alpha\nfrom orchestro import cell\n")
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    (pkg / "dupes.py").write_text(
        "from orchestro import cell\n@cell('same')\nclass A: ...\n@cell('same')\nclass B: ...\n"
    )
    (tmp_path / "loose.py").write_text(CELLS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def names(cells: list[type]) -> list[str]:
    return [spec_of(c).name for c in cells]


def test_module_target(project: Path) -> None:
    assert names(load_cells("proj.cells")) == ["alpha", "beta"]


def test_module_and_class_target(project: Path) -> None:
    assert names(load_cells("proj.cells:Beta")) == ["beta"]


def test_file_target_imports_under_the_package_name(project: Path) -> None:
    cells = load_cells("proj/cells.py")
    assert names(cells) == ["alpha", "beta"]
    assert cells[0].__module__ == "proj.cells"
    assert names(load_cells(str(project / "loose.py"))) == ["alpha", "beta"]


def test_cell_selection(project: Path) -> None:
    assert names(load_cells("proj.cells", ["beta"])) == ["beta"]


def test_imported_cells_are_not_started(project: Path) -> None:
    with pytest.raises(TargetError, match=r"no cells in 'proj.uses'"):
        load_cells("proj.uses")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("proj/missing.py", r"file 'proj/missing.py' does not exist: check the path"),
        ("nothere.mod", r"cannot import 'nothere.mod': there is no module 'nothere'; run from"),
        ("proj.nothere", r"cannot import 'proj.nothere': there is no module 'proj.nothere'"),
        (
            "proj.cells:Gamma",
            r"module 'proj.cells' has no attribute 'Gamma'; its cells: Alpha, Beta",
        ),
        ("proj.cells:service", r"proj.cells:service is not a cell"),
        ("proj", r"no cells in 'proj'"),
        ("not a module!", r"neither a module name \(pkg.module\) nor a .py file path"),
        ("proj.dupes", r"two cells in 'proj.dupes' are named 'same' \(A and B\): rename one"),
        (":Alpha", r"names no module"),
    ],
)
def test_bad_targets_are_one_readable_error(project: Path, target: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        load_cells(target)


def test_unknown_cell_name(project: Path) -> None:
    with pytest.raises(
        TargetError, match=r"no cell named 'gamma' in 'proj.cells'; its cells: alpha, beta"
    ):
        load_cells("proj.cells", ["gamma"])


def test_import_error_inside_the_users_module_shows_its_frames(project: Path) -> None:
    with pytest.raises(UserModuleError, match="no_such_dependency_xyz") as info:
        load_cells("proj.broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert 'proj/broken.py", line 1, in <module>' in str(info.value)
    assert "importlib" not in str(info.value)


def test_a_package_finds_the_cells_of_the_submodules_it_imports(project: Path) -> None:
    (project / "proj" / "__init__.py").write_text("from . import cells\n")
    assert names(load_cells("proj")) == ["alpha", "beta"]


def test_file_with_invalid_module_name(project: Path) -> None:
    bad = project / "my-cells.py"
    bad.write_text(textwrap.dedent(CELLS))
    with pytest.raises(TargetError, match="rename it to a valid Python identifier"):
        load_cells(str(bad))
