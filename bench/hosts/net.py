"""Network namespaces on a bridge: the hosts of the bed, and what removes them.

Every name made here starts with :data:`PREFIX`, so ``python -m bench.hosts cleanup`` can
remove what a killed run left behind. The bridge lives in a namespace of its own and every veth
end inside a namespace: the root namespace gets nothing but the guard table, which rejects the
bed's range there (a request to 10.201.0.x from the root namespace would otherwise leave the
machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "GUARD_TABLE",
    "PREFIX",
    "SUBNET",
    "BedError",
    "Host",
    "Network",
    "cleanup",
    "netns_available",
    "run",
    "connect_state",
    "tcp_state_root",
]

PREFIX = "orchb-"
SUBNET = "10.201.0"
GUARD_TABLE = "orchb_guard"  # in the root namespace, table family inet
_BRIDGE_NS = PREFIX + "net"


class BedError(RuntimeError):
    """The bed could not be built, or a fault did not take effect."""


def run(args: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a short command to completion (its output read, never left in a pipe)."""
    done = subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BedError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def netns_available() -> str | None:
    """None when the bed can run here, else why not (one line)."""
    if os.geteuid() != 0:
        return "the multi-host bed needs root (network namespaces, nft, tc)"
    for binary, package in (("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(binary) is None:
            return f"{binary} is not installed: apt-get install {package}"
    if shutil.which("etcd") is None:
        return "etcd is not installed: apt-get install etcd-server"
    probe = PREFIX + "probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns is unavailable here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass(frozen=True)
class Host:
    """One namespaced host: its namespace and its address on the bridge."""

    name: str
    address: str

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    def cmd(self, *args: str) -> list[str]:
        """``args`` as a command run inside this host."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        return run(self.cmd(*args), check=check, stdin=stdin)

    def pids(self) -> list[int]:
        """Every process in this host's namespace (all of them started by the bed)."""
        out = run(["ip", "netns", "pids", self.netns], check=False)
        return [int(p) for p in out.split()]


class Network:
    """The bridge and the hosts on it; a context manager that deletes all of it on exit."""

    def __init__(self, names: Sequence[str]) -> None:
        self.hosts = {name: Host(name, f"{SUBNET}.{10 + i}") for i, name in enumerate(names)}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Network:
        try:
            self.build()
        except BaseException:
            cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        cleanup()

    def build(self) -> None:
        cleanup()  # a previous run killed before its teardown
        install_guard()
        run(["ip", "netns", "add", _BRIDGE_NS])
        bridge = ["ip", "-n", _BRIDGE_NS]
        run([*bridge, "link", "add", "br0", "type", "bridge"])
        run([*bridge, "link", "set", "br0", "up"])
        run([*bridge, "link", "set", "lo", "up"])
        for index, host in enumerate(self.hosts.values()):
            run(["ip", "netns", "add", host.netns])
            port = f"p{index}"
            run(
                [
                    "ip",
                    "link",
                    "add",
                    port,
                    "netns",
                    _BRIDGE_NS,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    host.netns,
                ]
            )
            run([*bridge, "link", "set", port, "master", "br0"])
            run([*bridge, "link", "set", port, "up"])
            inside = ["ip", "-n", host.netns]
            run([*inside, "addr", "add", f"{host.address}/24", "dev", "eth0"])
            run([*inside, "link", "set", "eth0", "up"])
            run([*inside, "link", "set", "lo", "up"])
        self.wait_reachable()

    def wait_reachable(self, timeout: float = 10.0) -> None:
        """Every host reaches every other (the bridge learns addresses in a moment)."""
        from .probe import tcp_state

        names = list(self.hosts)
        deadline = time.monotonic() + timeout
        for a in names:
            for b in names:
                if a == b:
                    continue
                while tcp_state(self[a], self[b].address, 9, 1.0) != "refused":
                    if time.monotonic() > deadline:
                        raise BedError(f"host {a} does not reach {b} over the bridge")


def connect_state(address: str, port: int, timeout: float = 1.0) -> str:
    """A TCP connect from where this runs: ``open``, ``refused`` (an RST came back),
    ``timeout`` (no answer: the packets are dropped) or ``unreachable``."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return f"unreachable ({exc.strerror})"
        return "open"


def tcp_state_root(address: str, port: int = 9) -> str:
    """A connect from the root namespace: ``refused`` while the guard is in force."""
    return connect_state(address, port)


def install_guard() -> None:
    """Reject the bed's range in the root namespace, so nothing there leaves the machine."""
    script = (
        f"table inet {GUARD_TABLE} {{\n"
        "  chain out {\n"
        "    type filter hook output priority 0;\n"
        f"    ip daddr {SUBNET}.0/24 counter reject\n"
        "  }\n"
        "}\n"
    )
    run(["nft", "-f", "-"], stdin=script)
    listed = run(["nft", "list", "table", "inet", GUARD_TABLE])
    if f"ip daddr {SUBNET}.0/24" not in listed or "reject" not in listed:
        raise BedError(f"the root-namespace guard did not install: {listed!r}")


def cleanup() -> list[str]:
    """Remove everything a bed made, found by name: processes in its namespaces (SIGKILL),
    the namespaces (and with them the veths and the bridge), the guard table. Returns what
    it removed."""
    removed: list[str] = []
    listed = run(["ip", "netns", "list"], check=False)
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pids = run(["ip", "netns", "pids", name], check=False).split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = run(["ip", "netns", "pids", name], check=False).split()
            if pids:
                time.sleep(0.05)
        run(["ip", "netns", "del", name], check=False)
        removed.append(f"netns {name}")
    tables = run(["nft", "list", "tables"], check=False)
    if f"inet {GUARD_TABLE}" in tables:
        run(["nft", "delete", "table", "inet", GUARD_TABLE], check=False)
        removed.append(f"nft table inet {GUARD_TABLE}")
    return removed


def remove_run_dirs() -> list[str]:
    """Delete the run directories (logs, etcd data) that killed runs left in the temp dir."""
    import tempfile
    from pathlib import Path

    found = [p for p in Path(tempfile.gettempdir()).glob(PREFIX + "*") if p.is_dir()]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return [f"directory {p}" for p in found]
