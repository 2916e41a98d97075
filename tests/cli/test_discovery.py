"""Discovery from the outside: `orchestro run` in two processes, `orchestro ls` in a third."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ..conftest import Cli, run_cli, start_cli
from ..servers import Etcd, free_port

pytestmark = pytest.mark.slow


async def listed(*registry: str) -> list[dict[str, object]]:
    code, out, err = await run_cli("ls", "--json", *registry)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


async def wait_listed(
    predicate: object, *registry: str, timeout: float = 20.0
) -> list[dict[str, object]]:
    async with asyncio.timeout(timeout):
        while True:
            rows = await listed(*registry)
            if predicate(rows):  # type: ignore[operator]
                return rows
            await asyncio.sleep(0.2)


def cells(rows: list[dict[str, object]]) -> list[object]:
    return sorted(row["cell"] for row in rows)  # type: ignore[type-var]


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    server = Etcd()
    server.start()
    yield server
    server.close()


@pytest.mark.parametrize("backend", ["local", "etcd"])
async def test_two_processes_find_each_other_and_a_killed_one_disappears(
    backend: str, cli_processes: list[Cli], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # local: the default, under XDG_RUNTIME_DIR, with no configuration at all
    registry = ["--registry", request.getfixturevalue("etcd").url] if backend == "etcd" else []
    ttl = ["--registry-ttl", "2"]
    a = await start_cli(
        "run", "examples/catalog.py", "--cell", "catalog", "--port", "0", *ttl, *registry
    )
    b = await start_cli(
        "run", "examples/catalog.py", "--cell", "reviews", "--port", "0", *ttl, *registry
    )
    cli_processes.extend([a, b])
    url_a = (await a.wait_serving())["catalog"]
    await b.wait_serving()

    rows = await wait_listed(lambda r: cells(r) == ["catalog", "reviews"], *registry)
    catalog = next(r for r in rows if r["cell"] == "catalog")
    assert catalog["url"] == url_a
    assert catalog["state"] == "ready"
    assert catalog["pid"] == a.proc.pid

    code, table, _ = await run_cli("ls", *registry)
    assert code == 0
    assert table.splitlines()[0].split() == [
        "CELL",
        "INSTANCE",
        "ADDRESS",
        "STATE",
        "AGE",
        "PID",
        "HOST",
    ]
    assert url_a in table

    b.proc.send_signal(signal.SIGKILL)
    await b.wait()
    # gone within its TTL (2 s) plus one renewal period of slack
    await wait_listed(lambda r: cells(r) == ["catalog"], *registry, timeout=2 + 2)

    a.signal(signal.SIGTERM)  # a drained cell deregisters at once
    await a.exits_with(0)
    assert await listed(*registry) == []


async def test_etcd_outage_keeps_serving_and_registers_once_afterwards(
    etcd: Etcd, cli_processes: list[Cli]
) -> None:
    registry = ["--registry", etcd.url]
    cli = await start_cli(
        "run", "examples/hello.py", "--port", "0", "--registry-ttl", "2", *registry
    )
    cli_processes.append(cli)
    url = (await cli.wait_serving())["greeter"]
    await wait_listed(lambda r: cells(r) == ["greeter"], *registry)

    etcd.stop()
    code, _, err = await run_cli("ls", *registry)
    assert code == 1
    assert err.strip().startswith(f"orchestro: error: registry {etcd.url}: cannot reach etcd")
    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # the cell keeps serving for the 10 s etcd is down
            async with session.get(f"{url}/greet") as response:
                assert response.status == 200
            await asyncio.sleep(1)
    etcd.start()

    rows = await wait_listed(lambda r: len(r) >= 1, *registry, timeout=30)
    await asyncio.sleep(3)  # a duplicate or ghost would show by now (TTL 2 s)
    rows = await listed(*registry)
    assert cells(rows) == ["greeter"], rows
    assert rows[0]["pid"] == cli.proc.pid
    cli.signal()
    await cli.exits_with(0)


async def test_ls_errors() -> None:
    url = f"etcd://127.0.0.1:{free_port()}"
    code, out, err = await run_cli("ls", "--registry", url)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"registry {url}: cannot reach etcd" in err

    code, _, err = await run_cli("ls", "--registry", "nope://x")
    assert code == 2
    assert err.strip() == (
        "orchestro: error: registry URL 'nope://x': unknown scheme 'nope'; use one of "
        "local://, etcd://, memory://, static://, dns://"
    )


async def test_ls_on_an_empty_registry(tmp_path: Path) -> None:
    code, out, _ = await run_cli("ls", "--registry", f"local://{tmp_path}/empty.db")
    assert code == 0
    assert out.strip() == f"no cells registered in local://{tmp_path}/empty.db"


async def test_run_with_a_bad_registry_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"garbage" * 200)
    code, _, err = await run_cli("run", "examples/hello.py", "--registry", f"local://{bad}")
    assert code == 2
    assert err.strip().startswith("orchestro: error: registry local://")
    assert "is not a registry database" in err
