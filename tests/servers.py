"""Real servers for tests: started on free loopback ports, stopped by PID, cleaned up.

A test that needs a server that is not installed skips with the Debian package to install,
except under ``ORCHESTRO_REQUIRE_SERVERS=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed: apt-get install {package}"
        if os.environ.get("ORCHESTRO_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def wait_until_answering(url: str, timeout: float = 30.0) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process we started, SIGKILL it after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Etcd:
    """A real etcd on loopback, which a test may stop and start again (same data, ports)."""

    def __init__(self) -> None:
        self.binary = require("etcd", "etcd-server")
        self.data = Path(tempfile.mkdtemp(prefix="orchestro-etcd-"))
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--name",
                "t",
                "--data-dir",
                str(self.data / "data"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"t={peer}",
                "--initial-cluster-state",
                "new",
                "--log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until_answering(f"{client}/health"):
            self.stop()
            raise RuntimeError("etcd did not become healthy within 30 s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class Prometheus:
    """A real Prometheus on loopback with the given configuration (a YAML string)."""

    def __init__(self, config: str) -> None:
        self.binary = require("prometheus", "prometheus")
        self.data = Path(tempfile.mkdtemp(prefix="orchestro-prometheus-"))
        self.port = free_port()
        (self.data / "prometheus.yml").write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.data / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until_answering(f"{self.url}/-/ready"):
            self.close()
            raise RuntimeError("prometheus did not become ready within 30 s")

    def close(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.data, ignore_errors=True)
