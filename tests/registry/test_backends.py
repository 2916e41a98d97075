"""URLs, bad input, and what only one backend does."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from orchestro import ConfigurationError, DiscoveryError
from orchestro.registry import Instance, RegistryView, open_registry
from orchestro.registry.etcd import EtcdRegistry
from orchestro.registry.local import LocalRegistry, default_path
from orchestro.registry.memory import MemoryRegistry
from orchestro.registry.static import StaticRegistry

from ..servers import Etcd


def test_urls_choose_backends(tmp_path: Path) -> None:
    assert isinstance(open_registry("memory://"), MemoryRegistry)
    local = open_registry(f"local://{tmp_path}/r.db", ttl=3)
    assert isinstance(local, LocalRegistry)
    assert (local.path, local.ttl) == (tmp_path / "r.db", 3)
    etcd = open_registry("etcd://10.0.0.1:2379,10.0.0.2:2380/team-a")
    assert isinstance(etcd, EtcdRegistry)
    assert isinstance(open_registry("static://a=http://127.0.0.1:1"), StaticRegistry)


def test_default_local_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_path() == tmp_path / "orchestro" / "registry.db"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_path() == tmp_path / "state" / "orchestro" / "registry.db"
    assert open_registry("local://").url == f"local://{tmp_path / 'state/orchestro/registry.db'}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("orchestro.db", "has no scheme: use local://"),
        ("redis://x", "unknown scheme 'redis'; use one of local://, etcd://"),
        ("etcd://", "names no etcd endpoint"),
        ("etcd://host:notaport", "'host:notaport' is not host:port"),
        ("static://orders", "'orders' is not name=http://host:port"),
        ("static://orders=ftp://x", "is not name=http://host:port"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_registry(url)


async def test_an_unwritable_local_path_is_reported_when_opened() -> None:
    # Opening a local:// file is I/O (and may wait for a lock): it happens in a thread, on
    # open() (which the registry view's start calls) or on first use.
    registry = open_registry("local:///proc/orchestro/registry.db")
    with pytest.raises(ConfigurationError, match="cannot create /proc/orchestro"):
        await registry.open()  # type: ignore[attr-defined]
    await registry.aclose()


async def test_corrupt_database_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"this is not sqlite" * 100)
    registry = open_registry(f"local://{path}")
    with pytest.raises(ConfigurationError, match=r"is not a registry database .* delete it"):
        await registry.list()
    view = RegistryView(registry)
    with pytest.raises(ConfigurationError, match=r"is not a registry database"):
        await view.start()
    await registry.aclose()


async def test_static_registry_lists_its_addresses() -> None:
    registry = open_registry(
        "static://orders=http://127.0.0.1:8001,orders=https://h2,pay=http://[::1]:9"
    )
    listed = await registry.list()
    assert [(i.cell, i.url) for i in listed] == [
        ("orders", "http://127.0.0.1:8001"),
        ("orders", "https://h2:443"),
        ("pay", "http://[::1]:9"),
    ]
    await registry.register(listed[0])  # accepted, ignored
    async with RegistryView(registry) as view:
        async with asyncio.timeout(5):
            await view.wait_ready()
        assert len(view.ready("orders")) == 2
    await registry.aclose()


async def test_local_invalid_records_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = open_registry(f"local://{tmp_path}/r.db")
    good = Instance(cell="a", id="a-1", host="127.0.0.1", port=1)
    await registry.register(good)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("INSERT INTO instances VALUES ('bad-1', 'a', 'x', 9e12, '{\"cell\": 1}')")
        db.execute("INSERT INTO instances VALUES ('bad-2', 'a', 'x', 9e12, 'not json')")
    with caplog.at_level(logging.WARNING, logger="orchestro.registry"):
        assert await registry.list() == [good]
        assert await registry.list() == [good]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "skipping invalid record 'bad-1'" in warnings[0]
    await registry.aclose()


async def test_etcd_invalid_records_are_skipped(
    etcd_server: Etcd, caplog: pytest.LogCaptureFixture
) -> None:
    registry = open_registry(f"{etcd_server.url}/invalid")
    good = Instance(cell="a", id="a-1", host="127.0.0.1", port=1)
    await registry.register(good)
    key = base64.b64encode(b"/invalid/instances/a/garbage").decode()
    async with aiohttp.ClientSession() as session:
        body = {"key": key, "value": base64.b64encode(b"{nope").decode()}
        async with session.post(f"{etcd_server.http}/v3/kv/put", json=body) as response:
            assert response.status == 200
    with caplog.at_level(logging.WARNING, logger="orchestro.registry"):
        assert await registry.list() == [good]
    assert "skipping invalid record '/invalid/instances/a/garbage'" in caplog.text
    await registry.aclose()


async def test_unreachable_etcd_is_a_discovery_error_naming_the_url() -> None:
    from ..servers import free_port

    url = f"etcd://127.0.0.1:{free_port()}"
    registry = open_registry(url)
    with pytest.raises(DiscoveryError, match=rf"registry {url}: cannot reach etcd"):
        await registry.list()
    await registry.aclose()


WRITER = """
import asyncio, sys
from orchestro.registry import Instance, open_registry

async def main(url, n, tag):
    registry = open_registry(url, ttl=30)
    for i in range(n):
        instance = Instance(cell=f"c{i % 5}", id=f"{tag}-{i}", host="127.0.0.1", port=1000 + i)
        await registry.register(instance)
        if i % 10 == 0:
            await registry.heartbeat()
    await registry.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def test_local_is_safe_under_concurrent_writers(tmp_path: Path) -> None:
    url = f"local://{tmp_path}/shared.db"
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), url, "60", f"p{n}"])
        for n in range(4)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    with sqlite3.connect(tmp_path / "shared.db") as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == 240
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_instance_record_round_trips() -> None:
    instance = Instance(cell="a", id="a-1", host="::1", port=8, labels={"weight": "2"})
    assert Instance.model_validate(json.loads(instance.model_dump_json())) == instance
    assert instance.url == "http://[::1]:8"


OPENER = """
import sys
from orchestro.registry import open_registry
open_registry(sys.argv[1])
"""


def test_processes_opening_a_new_database_together(tmp_path: Path) -> None:
    for round_no in range(5):  # the race is on creating the file and switching it to WAL
        url = f"local://{tmp_path}/race-{round_no}.db"
        openers = [
            subprocess.Popen([sys.executable, "-c", OPENER, url], stderr=subprocess.PIPE)
            for _ in range(6)
        ]
        results = [(o.wait(timeout=60), o.stderr.read() if o.stderr else b"") for o in openers]
        assert all(code == 0 for code, _ in results), results
