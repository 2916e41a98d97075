"""Seeded chaos in a user's own project: their cells, their pytest, no configuration; a
failure prints the plan's seed, and that seed replays the same faults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import orchestro

SOURCES = Path(orchestro.__file__).resolve().parent.parent  # this checkout, not an install

CELLS = """
from orchestro import CallError, HTTPError, cell, mesh, service


@cell("stock", port=0)
class Stock:
    @service.get("/stock/{item}")
    async def count(self, item: str) -> dict[str, int]:
        return {"count": len(item)}


@cell("shop", port=0)
class Shop:
    stock = mesh.client(Stock)

    @service.get("/items/{item}")
    async def item(self, item: str) -> dict[str, int]:
        try:
            return await self.stock.count(item=item)
        except CallError as exc:
            raise HTTPError(503, f"stock unavailable: {exc}") from exc
"""

TESTS = """
import pytest_asyncio

from orchestro import Mesh
from orchestro.testing import CellClient, FaultInjector, Phase

from app import Shop, Stock


@pytest_asyncio.fixture
async def stock_pair():
    async with CellClient(Stock) as one, CellClient(Stock) as two:
        yield f"static://stock={one.url},stock={two.url}"


async def test_the_shop_rides_out_errors_and_a_kill(cell_client, fault_plan, stock_pair):
    plan = fault_plan(
        Phase(calls=10),
        Phase(calls=60, error=0.1, kill=0.05, down=5, delay=0.1, delay_seconds=0.01),
        seed=7,
    )
    faults = FaultInjector().follow(plan)
    async with Mesh(stock_pair, transport=faults) as calls:
        shop = await cell_client(Shop, mesh=calls)
        for _ in range(40):
            assert (await shop.get("/items/apple")).status == 200
    assert plan.log  # faults were injected


async def test_one_stock_and_a_random_seed(cell_client, fault_plan):
    async with CellClient(Stock) as stock:
        plan = fault_plan(Phase(calls=30, kill=0.5, down=30, drop=0.1))
        faults = FaultInjector().follow(plan)
        async with Mesh(f"static://stock={stock.url}", transport=faults) as calls:
            shop = await cell_client(Shop, mesh=calls)
            statuses = [(await shop.get("/items/pear")).status for _ in range(20)]
    print("statuses", statuses)
    assert statuses == [200] * 20  # one stock instance, killed: this fails
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(CELLS))
    (tmp_path / "test_shop.py").write_text(textwrap.dedent(TESTS))
    return tmp_path


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCES), str(project)])
    out = project / "pytest-output.txt"
    with out.open("w") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
            cwd=project, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
            timeout=120,
        )  # fmt: skip
    proc.stdout = out.read_text()
    return proc


def section(output: str) -> list[str]:
    """The fault-plan section of a failure: its lines, without the instances' ports."""
    start = output.index("orchestro fault plan")
    lines = output[start:].splitlines()[1:]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith(("=", "-")))]
    return [re.sub(r" \(http://127\.0\.0\.1:\d+\)", "", line) for line in lines if line]


def test_a_plan_survived_passes_and_a_failure_prints_the_seed_that_replays_it(
    project: Path,
) -> None:
    # Both tests in one run (each run of pytest costs seconds of imports): the plan that
    # survived passes and prints nothing; the one that failed prints its plan.
    first = run_pytest(project, "test_shop.py")
    assert first.returncode == 1, first.stdout
    assert "1 failed, 1 passed" in first.stdout, first.stdout
    assert first.stdout.count("orchestro fault plan") == 1, first.stdout  # on failure only
    assert "rides_out_errors" not in first.stdout.split("orchestro fault plan")[1]
    report = section(first.stdout)
    match = re.fullmatch(r"replay with: FaultPlan\(.*seed=(\d+)\)", report[0])
    assert match, report
    assert report[1].startswith("faults injected: "), report
    assert any(": kill" in line for line in report[2:]), report  # the fault that failed it

    again = run_pytest(
        project, "test_shop.py::test_one_stock_and_a_random_seed", "--orchestro-seed",
        match.group(1),
    )  # fmt: skip
    assert again.returncode == 1, again.stdout
    assert section(again.stdout) == report  # the same seed: the same faults, call by call
    statuses = re.search(r"statuses \[.*\]", first.stdout)
    assert statuses is not None
    assert statuses.group(0) in again.stdout  # and the same outcomes


def test_a_bad_seed_option_is_one_line(project: Path) -> None:
    result = run_pytest(project, "--orchestro-seed", "abc")
    assert result.returncode == 4, result.stdout
    assert "--orchestro-seed: invalid int value: 'abc'" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
