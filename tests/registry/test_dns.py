"""The dns:// registry against a real DNS server (dnsmasq on 127.0.0.1): instances appear and
leave as the records change, and a resolver outage keeps the last good view."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from orchestro.errors import ConfigurationError
from orchestro.registry.base import Instance
from orchestro.registry.dns import DnsRegistry

from ..servers import require

DNSMASQ = "/usr/sbin/dnsmasq"  # Debian's dnsmasq-base; /usr/sbin may not be on PATH


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Dnsmasq:
    """dnsmasq serving ``hosts`` and an SRV record for stock.test; ``*.test`` is local, so an
    unknown name there is NXDOMAIN."""

    def __init__(self, directory: Path) -> None:
        self.hosts = directory / "hosts"
        self.log = directory / "dnsmasq.log"
        self.port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, hosts: Sequence[str], *extra: str) -> None:
        self.write(hosts)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    DNSMASQ,
                    "--no-daemon",
                    f"--port={self.port}",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    f"--addn-hosts={self.hosts}",
                    "--local=/test/",
                    "--pid-file=",
                    f"--user={_user()}",
                    "--srv-host=_http._tcp.stock.test,stock.test,8080",
                    *extra,
                ],
                stdout=log,
                stderr=log,
            )
        self._wait_answering()

    def _wait_answering(self, timeout: float = 10.0) -> None:
        import time

        import dns.exception
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 0.5
        deadline = time.monotonic() + timeout
        while True:
            try:
                resolver.resolve("_http._tcp.stock.test", "SRV")
                return
            except dns.exception.DNSException:
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dnsmasq did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def write(self, hosts: Sequence[str]) -> None:
        self.hosts.write_text("".join(f"{line}\n" for line in hosts))

    def reload(self, hosts: Sequence[str]) -> None:
        self.write(hosts)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    if not Path(DNSMASQ).exists():
        require("dnsmasq", "dnsmasq-base")  # skips on a laptop, fails in CI
    server = Dnsmasq(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def registry(dnsmasq: Dnsmasq) -> AsyncIterator[DnsRegistry]:
    url = f"dns://127.0.0.1:{dnsmasq.port}/stock=stock.test,gone=missing.test:9000?interval=0.2"
    found = DnsRegistry.from_url(url, ttl=5.0)
    yield found
    await found.aclose()


def addresses(instances: Sequence[Instance], cell: str = "stock") -> set[str]:
    return {f"{i.host}:{i.port}" for i in instances if i.cell == cell}


async def until(
    watch: AsyncIterator[Sequence[Instance]], want: set[str], timeout: float = 20.0
) -> Sequence[Instance]:
    """The first snapshot of the watch whose stock instances are ``want``."""
    async with asyncio.timeout(timeout):
        async for snapshot in watch:
            if addresses(snapshot) == want:
                return snapshot
    raise AssertionError("the watch ended")


async def test_instances_follow_the_records(dnsmasq: Dnsmasq, registry: DnsRegistry) -> None:
    dnsmasq.start(["10.201.0.2 stock.test"])
    watch = registry.watch()
    first = await until(watch, {"10.201.0.2:8080"})  # the port from the SRV record
    (stock,) = [i for i in first if i.cell == "stock"]
    assert stock.id == "stock-dns-10.201.0.2:8080"
    assert stock.hostname == "stock.test"
    assert addresses(first, "gone") == set()  # NXDOMAIN: no instances, not a failure
    assert "gone" not in registry.stale

    dnsmasq.reload(["10.201.0.2 stock.test", "10.201.0.3 stock.test"])
    both = await until(watch, {"10.201.0.2:8080", "10.201.0.3:8080"})
    again = next(i for i in both if i.host == "10.201.0.2")
    assert again.started_at == stock.started_at  # the same instance, not a new one

    dnsmasq.reload(["10.201.0.3 stock.test"])
    await until(watch, {"10.201.0.3:8080"})

    dnsmasq.reload([])
    await until(watch, set())  # every pod gone: NXDOMAIN
    await watch.aclose()  # type: ignore[attr-defined]


async def test_churn_remembers_only_the_current_instances(
    dnsmasq: Dnsmasq, registry: DnsRegistry
) -> None:
    async def resolved(want: set[str]) -> Sequence[Instance]:
        async with asyncio.timeout(20):
            while True:
                await registry.refresh()
                now = await registry.list()
                if addresses(now) == want:
                    return now
                await asyncio.sleep(0.05)

    dnsmasq.start(["10.201.1.1 stock.test"])
    (first,) = await resolved({"10.201.1.1:8080"})
    for n in range(2, 12):  # a rollout at a time: every pod a new address
        dnsmasq.reload([f"10.201.1.{n} stock.test", f"10.201.1.{n + 1} stock.test"])
        await resolved({f"10.201.1.{n}:8080", f"10.201.1.{n + 1}:8080"})
        assert len(registry._first_seen) == 2  # not one per address ever seen
    dnsmasq.reload(["10.201.1.1 stock.test"])
    (back,) = await resolved({"10.201.1.1:8080"})
    assert back.started_at > first.started_at  # a new pod at an old address, not the old one
    assert list(registry._first_seen) == [back.id]


async def test_resolver_outage_keeps_the_last_good_view(
    dnsmasq: Dnsmasq, registry: DnsRegistry
) -> None:
    dnsmasq.start(["10.201.0.7 stock.test"])
    assert addresses(await registry.list()) == {"10.201.0.7:8080"}
    dnsmasq.stop()
    await registry.refresh()
    assert "stock" in registry.stale
    assert addresses(await registry.list()) == {"10.201.0.7:8080"}

    dnsmasq.start(["10.201.0.8 stock.test"])  # the same port: the resolver recovers
    async with asyncio.timeout(20):
        while addresses(await registry.list()) != {"10.201.0.8:8080"}:
            await asyncio.sleep(0.1)
    assert "stock" not in registry.stale


def test_url_grammar() -> None:
    found = DnsRegistry.from_url("dns:///a=a-peers.ns.svc.cluster.local,b=b.x:81", ttl=5)
    assert [(e.cell, e.host, e.port) for e in found._entries] == [
        ("a", "a-peers.ns.svc.cluster.local", None),
        ("b", "b.x", 81),
    ]
    assert found.interval == 5.0
    empty = DnsRegistry.from_url("dns:///", ttl=5)  # a cell that calls no one
    assert empty._entries == []
    for bad in ("dns:///orders", "dns:///a=h:port", "dns:///a=h?interval=0"):
        with pytest.raises(ConfigurationError, match="registry URL"):
            DnsRegistry.from_url(bad, ttl=5)


async def test_registry_view_follows_dns(dnsmasq: Dnsmasq, registry: DnsRegistry) -> None:
    """What the mesh resolves from: the process's view, fed by the registry's watch."""
    from orchestro.registry import RegistryView

    dnsmasq.start(["10.201.0.4 stock.test"])
    async with RegistryView(registry) as view:
        async with asyncio.timeout(20):
            await view.wait_for(lambda v: {i.host for i in v.ready("stock")} == {"10.201.0.4"})
        dnsmasq.reload(["10.201.0.4 stock.test", "10.201.0.5 stock.test"])
        async with asyncio.timeout(20):
            await view.wait_for(lambda v: len(v.ready("stock")) == 2)
        dnsmasq.stop()
        async with asyncio.timeout(20):
            while "stock" not in registry.stale:  # the resolver has failed at least once
                await asyncio.sleep(0.05)
        assert {i.host for i in view.ready("stock")} == {"10.201.0.4", "10.201.0.5"}


async def test_ttl_sets_the_next_resolution(dnsmasq: Dnsmasq) -> None:
    dnsmasq.start(["10.201.0.9 stock.test"], "--local-ttl=3")
    url = f"dns://127.0.0.1:{dnsmasq.port}/stock=stock.test?interval=10"
    registry = DnsRegistry.from_url(url, ttl=5.0)
    try:
        await registry.refresh()
        assert registry.delay == 3.0  # the answers' TTL, under the interval
        registry.interval = 2.0
        await registry.refresh()
        assert registry.delay == 2.0  # never later than the interval
    finally:
        await registry.aclose()
