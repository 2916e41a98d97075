"""The bed's own pieces: the figures, the TCP proxy (loopback, no root), and — with root —
the guard, a fault that fails to install, and the cleanup of everything by name."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.hosts import faults, net
from bench.hosts.scenarios import figures, recovered_after

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_figures_count_stalls_not_only_percentiles() -> None:
    records = [(float(i), 0.005, 200, "back1") for i in range(997)]
    records += [(1000.0, 2.5, 200, "back2"), (1001.0, 1.5, 200, "back2"), (1002.0, 10.0, 0, "")]
    fig = figures("x", records)
    assert (fig.requests, fig.failed, fig.over_1s, fig.over_2s) == (1000, 1, 3, 2)
    assert fig.p99 == 0.005  # three stalls in a thousand hide under the p99 ...
    assert fig.max == 10.0  # ... and not under the max
    assert recovered_after(records, 999.5) == pytest.approx(1012.0 - 999.5)


@pytest.fixture
def echo() -> Iterator[int]:
    """A server on loopback that answers each chunk with the same bytes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    code = (
        "import socket,sys,threading\n"
        "s=socket.socket(fileno=int(sys.argv[1]))\n"
        "def serve(c):\n"
        "    while (d:=c.recv(65536)): c.sendall(d)\n"
        "while True:\n"
        "    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(server.fileno())],
        pass_fds=(server.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.close()
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture
def proxy(echo: int, tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    mode = tmp_path / "mode.json"
    mode.write_text("{}")
    log = open(tmp_path / "proxy.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.hosts.proxy",
            f"127.0.0.1:{port}",
            f"127.0.0.1:{echo}",
            str(mode),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (tmp_path / "proxy.log").read_text()
            time.sleep(0.05)
    yield port, mode, proc
    proc.terminate()
    proc.wait()
    log.close()


def set_mode(mode: Path, proc: subprocess.Popen[bytes], value: dict[str, float]) -> None:
    mode.write_text(json.dumps(value))
    applied = mode.with_suffix(".applied")
    applied.unlink(missing_ok=True)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not (applied.exists() and json.loads(applied.read_text()) == value):
        assert time.monotonic() < deadline, "the proxy did not apply its mode"
        time.sleep(0.02)


def round_trip(port: int) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        return sock.recv(16), time.monotonic() - started


def test_the_proxy_forwards_then_delays_each_way(
    proxy: tuple[int, Path, subprocess.Popen[bytes]],
) -> None:
    port, mode, proc = proxy
    assert round_trip(port)[0] == b"ping"
    set_mode(mode, proc, {"delay": 0.1})
    data, took = round_trip(port)
    # A lower bound only: the proxy sleeps 0.1 s before each chunk each way.
    assert data == b"ping"
    assert took >= 0.2


def test_the_proxy_resets_connections(proxy: tuple[int, Path, subprocess.Popen[bytes]]) -> None:
    port, mode, proc = proxy
    set_mode(mode, proc, {"reset": 1.0})
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        with pytest.raises(ConnectionResetError):  # a FIN would return b"" and not raise
            sock.recv(16)


@pytest.mark.slow
@pytest.mark.usefixtures("bed_available")
def test_the_guard_rejects_the_range_in_the_root_namespace_and_cleanup_removes_all() -> None:
    with net.Network(("a", "b")) as network:
        assert net.tcp_state_root(network["a"].address) == "refused"  # never leaves the machine
        assert f"{net.PREFIX}a" in net.run(["ip", "netns", "list"])
        sleeper = subprocess.Popen(network["b"].cmd("sleep", "600"), stdout=subprocess.DEVNULL)
        assert network["b"].pids() == [sleeper.pid]
        # A run killed before its teardown: the cleanup finds it all by name.
        removed = net.cleanup()
        assert sleeper.wait(10) == -signal.SIGKILL
    assert any("netns orchb-a" in r for r in removed)
    assert f"inet {net.GUARD_TABLE}" in " ".join(removed)
    assert net.PREFIX not in net.run(["ip", "netns", "list"])
    assert net.GUARD_TABLE not in net.run(["nft", "list", "tables"])


@pytest.mark.slow
@pytest.mark.usefixtures("bed_available")
def test_a_rule_that_does_not_install_fails_the_fault() -> None:
    with net.Network(("a", "b")) as network:
        broken = faults._Table(network["a"], "broken", {"out": ("output", ["ip daddr drop"])})
        with pytest.raises(net.BedError, match="nft"):
            broken.install()
        # And a rule that installs but matches nothing is caught by the probe.
        silent = faults._Table(
            network["a"], "silent", {"out": ("output", ["ip daddr 10.201.0.99 counter drop"])}
        )
        with faults._installed(silent), pytest.raises(net.BedError, match="not black-holed"):
            faults._expect_dropped(network["a"], network["b"], silent)


def test_not_root_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert net.netns_available() == "the multi-host bed needs root (network namespaces, nft, tc)"
