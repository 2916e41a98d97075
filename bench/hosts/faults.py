"""Network and process faults, each a context manager that proves itself in effect.

Entering a fault installs it and then checks it took effect — the nft table is listed and a
probe from inside a host sees the drop, the delay or the refusal — and raises
:class:`~bench.hosts.net.BedError` if it did not: an ``nft`` rule with a syntax error installs
nothing, and a scenario that "passed" with no fault would be a lie. Leaving it removes the
fault and checks that too.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .bed import ETCD_PORT, Bed
from .net import BedError, Host
from .probe import connect_loss, http_get, tcp_state

__all__ = [
    "bandwidth",
    "blackhole",
    "etcd_down",
    "host_death",
    "isolate",
    "latency",
    "loss",
    "one_way",
    "resets",
]

_tables = itertools.count()


class _Table:
    """An nft table inside one host, installed from a script and deleted at the end."""

    def __init__(self, host: Host, kind: str, chains: dict[str, tuple[str, list[str]]]) -> None:
        self.host = host
        self.name = f"orchb_{kind}_{next(_tables)}"
        lines = [f"table inet {self.name} {{"]
        for chain, (hook, rules) in chains.items():
            lines += [f"  chain {chain} {{", f"    type filter hook {hook} priority 0;"]
            lines += [f"    {rule}" for rule in rules]
            lines.append("  }")
        lines.append("}")
        self.script = "\n".join(lines) + "\n"
        self.rules = [rule for _, rules in chains.values() for rule in rules]

    def install(self) -> None:
        self.host.run("nft", "-f", "-", stdin=self.script)
        listed = self.listing()
        for rule in self.rules:
            # Each rule's match must be in the listing (nft prints it back normalised).
            first = rule.split(" counter")[0].split()[0:2]
            if " ".join(first) not in listed:
                raise BedError(f"nft rule {rule!r} is not in {self.name} on {self.host.name}")

    def listing(self) -> str:
        return self.host.run("nft", "list", "table", "inet", self.name)

    def counted(self) -> int:
        """Packets the table's counters matched so far."""
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", self.listing()))

    def remove(self) -> None:
        self.host.run("nft", "delete", "table", "inet", self.name, check=False)
        if f"inet {self.name}" in self.host.run("nft", "list", "tables"):
            raise BedError(f"nft table {self.name} on {self.host.name} was not deleted")


@contextmanager
def _installed(table: _Table) -> Iterator[_Table]:
    table.install()
    try:
        yield table
    finally:
        table.remove()


def _addresses(hosts: list[Host]) -> str:
    return "{ " + ", ".join(h.address for h in hosts) + " }"


@contextmanager
def loss(bed: Bed, host: str, peers: list[str], percent: int) -> Iterator[float]:
    """Drop ``percent``% of packets, at random, each way between ``host`` and ``peers``
    (``numgen random``); yields the connect loss a probe measured."""
    at, others = bed[host], [bed[p] for p in peers]
    rule = f"numgen random mod 100 < {percent} counter drop"
    table = _Table(
        at,
        "loss",
        {
            "out": ("output", [f"ip daddr {_addresses(others)} {rule}"]),
            "in": ("input", [f"ip saddr {_addresses(others)} {rule}"]),
        },
    )
    with _installed(table):
        if "numgen random mod 100" not in table.listing():
            raise BedError(f"the loss rule is not listed on {host}: {table.listing()}")
        measured = connect_loss(at, others[0].address, count=200, wait=0.1)
        if measured == 0 or table.counted() == 0:
            raise BedError(f"{percent}% loss on {host} installed but no probe saw a drop")
        yield measured


@contextmanager
def blackhole(bed: Bed, a: str, b: str) -> Iterator[None]:
    """A partition between hosts ``a`` and ``b``: every packet between them dropped (no
    RST, no ICMP: as a cut cable or a dead router looks)."""
    at, peer = bed[a], bed[b]
    table = _Table(
        at,
        "blackhole",
        {
            "out": ("output", [f"ip daddr {peer.address} counter drop"]),
            "in": ("input", [f"ip saddr {peer.address} counter drop"]),
        },
    )
    with _installed(table):
        _expect_dropped(at, peer, table)
        _expect_dropped(peer, at, table)
        yield
    _expect_reachable(at, peer)


@contextmanager
def isolate(bed: Bed, host: str) -> Iterator[None]:
    """Black-hole ``host`` from every other host (its bridge port drops everything)."""
    at = bed[host]
    table = _Table(
        at,
        "isolate",
        {
            "out": ("output", ['oifname "eth0" counter drop']),
            "in": ("input", ['iifname "eth0" counter drop']),
        },
    )
    others = [h for h in bed.network.hosts.values() if h != at]
    with _installed(table):
        for other in others:
            _expect_dropped(other, at, table)
        yield
    for other in others:
        _expect_reachable(other, at)


@contextmanager
def one_way(bed: Bed, a: str, b: str) -> Iterator[None]:
    """Packets from ``a`` to ``b`` dropped; ``b`` to ``a`` still delivered."""
    at, peer = bed[a], bed[b]
    table = _Table(
        at,
        "oneway",
        {
            "out": ("output", [f"ip daddr {peer.address} counter drop"]),
            # Counts (accepts) what still arrives from b: the proof the other way is open.
            "in": ("input", [f"ip saddr {peer.address} counter accept"]),
        },
    )
    with _installed(table):
        if tcp_state(at, peer.address, 9, 0.3) != "timeout":
            raise BedError(f"{a} -> {b} is not dropped by the one-way partition")
        before = _counter(table, "accept")
        tcp_state(peer, at.address, 9, 0.3)  # its SYN arrives (the answer is dropped)
        if _counter(table, "accept") <= before:
            raise BedError(f"{b} -> {a} does not arrive under a one-way partition")
        yield
    _expect_reachable(at, peer)


def _counter(table: _Table, verdict: str) -> int:
    found = re.findall(rf"counter packets (\d+) bytes \d+ {verdict}", table.listing())
    return sum(int(n) for n in found)


def _expect_dropped(src: Host, dst: Host, table: _Table) -> None:
    before = table.counted()
    state = tcp_state(src, dst.address, 9, 0.3)
    if state != "timeout" or table.counted() <= before:
        raise BedError(f"{src.name} -> {dst.name} is not black-holed (connect: {state})")


def _expect_reachable(src: Host, dst: Host) -> None:
    deadline = time.monotonic() + 5
    while (state := tcp_state(src, dst.address, 9, 0.5)) != "refused":
        if time.monotonic() > deadline:
            raise BedError(f"{src.name} -> {dst.name} still unreachable after healing ({state})")


@contextmanager
def latency(bed: Bed, host: str, seconds: float, port: int = 8081) -> Iterator[float]:
    """Add ``seconds`` to every request/response round trip to ``host``'s proxied cell (the
    bed's TCP proxy delays each chunk each way by half); yields the round trip a probe saw."""
    with _proxy_mode(bed, host, port, {"delay": seconds / 2}):
        status, took, _ = http_get(bed["front"], f"http://{bed[host].address}:{port}/readyz", 5)
        if status != 200 or took < seconds:
            raise BedError(f"added latency on {host} not in effect (status {status}, {took:.3f} s)")
        yield took


@contextmanager
def resets(bed: Bed, host: str, share: float, port: int = 8081) -> Iterator[float]:
    """Reset (RST) ``share`` of new connections to ``host``'s proxied cell after their first
    request; yields the share of 100 probe requests that were reset."""
    with _proxy_mode(bed, host, port, {"reset": share}):
        url = f"http://{bed[host].address}:{port}/readyz"
        failed = sum(1 for _ in range(100) if http_get(bed["front"], url, 2)[0] == 0)
        if failed == 0:
            raise BedError(f"connection resets on {host} not in effect (100 probes answered)")
        yield failed / 100


@contextmanager
def _proxy_mode(bed: Bed, host: str, port: int, mode: dict[str, float]) -> Iterator[None]:
    proxy = bed.cells.get(f"{host}/proxy{port}")
    if proxy is None:
        raise BedError(f"{host}:{port} has no proxy: start its cell with proxied=True")
    path = bed.dir / f"proxy-{host}-{port}.json"

    def apply(value: dict[str, float]) -> None:
        path.write_text(json.dumps(value))
        applied = path.with_suffix(".applied")
        applied.unlink(missing_ok=True)
        proxy.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not (applied.exists() and json.loads(applied.read_text()) == value):
            if time.monotonic() > deadline or not proxy.alive():
                raise BedError(f"the proxy on {host} did not apply {value}:\n{proxy.tail()}")
            time.sleep(0.02)

    apply(mode)
    try:
        yield
    finally:
        apply({})


@contextmanager
def bandwidth(bed: Bed, host: str, rate_kbit: int) -> Iterator[float]:
    """Limit what ``host`` sends to ``rate_kbit`` (``tc tbf`` on its bridge port); yields the
    rate a 256 KiB download from it measured, in kbit/s."""
    at = bed[host]
    at.run(
        "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
        "rate", f"{rate_kbit}kbit", "burst", "16kb", "latency", "500ms",
    )  # fmt: skip
    try:
        if "tbf" not in at.run("tc", "qdisc", "show", "dev", "eth0"):
            raise BedError(f"tc tbf is not on {host}'s eth0")
        size = 256 * 1024
        status, took, body = http_get(
            bed["front"], f"http://{at.address}:8081/blob?size={size}", 30
        )
        measured = len(body) * 8 / 1000 / took if took else 0.0
        if status != 200 or measured > rate_kbit * 1.5:
            raise BedError(f"bandwidth limit on {host} not in effect ({measured:.0f} kbit/s)")
        yield measured
    finally:
        at.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)


@contextmanager
def host_death(bed: Bed, host: str, port: int = 8081) -> Iterator[list[int]]:
    """SIGKILL every process on ``host``; yields their PIDs. The host stays on the network
    (its kernel answers a connect with RST), as a machine whose processes crashed."""
    pids = bed.kill_host(host)
    if not pids:
        raise BedError(f"nothing ran on {host} to kill")
    if bed.answering(host, port) != "refused":
        raise BedError(f"{host}:{port} still accepts connections after SIGKILL")
    yield pids


@contextmanager
def etcd_down(bed: Bed, how: str = "kill") -> Iterator[None]:
    """etcd stopped (``stop``: SIGTERM) or killed (``kill``: SIGKILL) for the block, then
    started again on its data."""
    assert bed.etcd is not None
    bed.etcd.signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    bed.etcd.popen.wait(20)
    if bed.answering("etcd", ETCD_PORT) != "refused":
        raise BedError("etcd still accepts connections after it was stopped")
    try:
        yield
    finally:
        bed.start_etcd()
