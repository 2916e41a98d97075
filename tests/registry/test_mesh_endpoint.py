"""The registry record carries the mesh endpoint (https + mesh port) through every backend:
memory://, local://, etcd (the contract's opener), static:// and dns://."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestro.errors import ConfigurationError
from orchestro.registry import Instance, new_instance_id
from orchestro.registry.static import StaticRegistry

from ..servers import require
from .conftest import Opener
from .test_dns import DNSMASQ, Dnsmasq


def test_the_record_names_its_mesh_listener_or_none() -> None:
    plain = Instance(cell="vault", id="v-1", host="10.0.0.5", port=8080)
    assert plain.mesh_url is None
    meshed = plain.model_copy(update={"mesh_port": 8443})
    assert (meshed.url, meshed.mesh_url) == ("http://10.0.0.5:8080", "https://10.0.0.5:8443")
    six = Instance(cell="vault", id="v-2", host="::1", port=8080, mesh_port=8443)
    assert six.mesh_url == "https://[::1]:8443"


async def test_every_stored_backend_keeps_the_mesh_port(opener: Opener) -> None:
    registry = opener()
    record = Instance(
        cell="vault", id=new_instance_id("vault"), host="127.0.0.1", port=9001, mesh_port=9443
    )
    await registry.register(record)
    (listed,) = [i for i in await opener().list() if i.id == record.id]
    assert listed.mesh_port == 9443
    assert listed.mesh_url == "https://127.0.0.1:9443"


def test_static_addresses_may_name_the_mesh_port() -> None:
    found = StaticRegistry.from_url(
        "static://vault=http://10.0.0.5:8080?mesh=8443,shop=http://10.0.0.6:8080", ttl=5.0
    )
    vault, shop = found._instances
    assert (vault.port, vault.mesh_url) == (8080, "https://10.0.0.5:8443")
    assert shop.mesh_url is None
    with pytest.raises(ConfigurationError, match=r"mesh='x' is not a port.*\?mesh=8443"):
        StaticRegistry.from_url("static://vault=http://10.0.0.5:8080?mesh=x", ttl=5.0)


async def test_dns_reads_the_mesh_port_from_the_mesh_srv_record(tmp_path: Path) -> None:
    if not await asyncio.to_thread(Path(DNSMASQ).exists):
        require("dnsmasq", "dnsmasq-base")  # skips on a laptop, fails in CI
    from orchestro.registry.dns import DnsRegistry

    server = Dnsmasq(tmp_path)
    server.start(
        ["10.201.0.2 stock.test", "10.201.0.3 plain.test"],
        "--srv-host=_mesh._tcp.stock.test,stock.test,8443",
    )
    try:
        url = f"dns://127.0.0.1:{server.port}/stock=stock.test,plain=plain.test:9000"
        registry = DnsRegistry.from_url(url, ttl=5.0)
        try:
            found = {i.cell: i for i in await registry.list()}
        finally:
            await registry.aclose()
    finally:
        server.stop()
    assert (found["stock"].port, found["stock"].mesh_port) == (8080, 8443)
    assert found["stock"].mesh_url == "https://10.201.0.2:8443"
    assert found["plain"].mesh_port == 0  # no _mesh._tcp record: no mesh listener
