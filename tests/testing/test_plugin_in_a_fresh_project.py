"""The pytest plugin in a user's own project: no pytest configuration, so pytest-asyncio runs
in its default strict mode (this repository's own tests run in auto mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CELL = """
from orchestro import cell, service


@cell("greeter", port=0)
class Greeter:
    @service.get("/greet")
    async def greet(self, name: str = "world") -> dict[str, str]:
        return {"message": f"Hello {name}"}
"""

TESTS = """
import pytest
import pytest_asyncio

from app import Greeter


async def test_with_the_fixture(cell_client):
    client = await cell_client(Greeter)
    assert (await client.get("/greet")).json() == {"message": "Hello world"}


@pytest_asyncio.fixture
async def greeter(cell_client):
    return await cell_client(Greeter)


async def test_through_a_fixture_of_the_users_own(greeter):
    assert (await greeter.get("/greet", params={"name": "Ada"})).status == 200


class TestInAClass:
    async def test_method(self, cell_client):
        assert (await (await cell_client(Greeter)).get("/greet")).status == 200


@pytest.mark.asyncio
async def test_marked_already(cell_client):
    assert (await (await cell_client(Greeter)).get("/greet")).status == 200


def test_sync_fixture(make_cell):
    assert isinstance(make_cell(Greeter), Greeter)


@pytest.mark.anyio
async def test_left_to_another_runner(request):
    # Run by anyio's pytest plugin (anyio comes with our dependencies), not pytest-asyncio.
    assert request.node.get_closest_marker("asyncio") is None
"""

KIT_ONLY = """
from app import Greeter
from orchestro.testing import CellClient


async def test_with_the_client_and_no_fixture():
    async with CellClient(Greeter) as client:
        assert (await client.get("/greet")).status == 200
"""


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(project)
    out = project / "pytest-output.txt"
    with out.open("w") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
            cwd=project,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
    proc.stdout = out.read_text()
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(CELL))
    (tmp_path / "test_app.py").write_text(textwrap.dedent(TESTS))
    (tmp_path / "test_kit_only.py").write_text(textwrap.dedent(KIT_ONLY))
    return tmp_path


def test_async_tests_run_in_strict_mode_with_no_configuration(project: Path) -> None:
    result = run_pytest(project, "--deselect", "test_app.py::test_left_to_another_runner")
    assert result.returncode == 0, result.stdout
    assert "6 passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout


def test_tests_marked_for_another_runner_are_left_to_it(project: Path) -> None:
    result = run_pytest(project, "test_app.py::test_left_to_another_runner")
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout, result.stdout


def test_auto_mode_still_works(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    result = run_pytest(project, "--deselect", "test_app.py::test_left_to_another_runner")
    assert result.returncode == 0, result.stdout
    assert "6 passed" in result.stdout, result.stdout
