"""The bed: namespaced hosts, etcd on one, cells on others, load from inside the frontend.

```python
with Bed() as bed:                      # etcd, front, back1, back2 on a bridge
    bed.start_etcd()
    bed.start_cell("back1", "backend"); bed.start_cell("back2", "backend")
    bed.start_cell("front", "front")
    with bed.load() as load:            # 100 calls/s through the frontend cell
        ...                             # inject faults (bench.hosts.faults)
    print(load.figures())
```

Every process is started in a namespace of the bed with its output in a file of the run's
directory, and stopped by its PID; the bed deletes its namespaces, veths, bridge, guard table,
processes and directory on exit, on Ctrl-C and on failure (``python -m bench.hosts cleanup``
removes what a SIGKILLed run left, by name prefix).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import PREFIX, BedError, Host, Network
from .probe import http_get, in_netns, tcp_state

__all__ = ["ETCD_PORT", "Bed", "Load", "Proc"]

ETCD_PORT = 2379
ROOT = Path(__file__).resolve().parents[2]  # the repository: bench.hosts and src/ importable


@dataclass
class Proc:
    name: str
    host: Host
    popen: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Bed:
    """Hosts on a bridge and the processes the bed started on them."""

    def __init__(
        self,
        hosts: tuple[str, ...] = ("etcd", "front", "back1", "back2"),
        *,
        ttl: float = 5.0,
        keep: bool = False,
    ) -> None:
        self.network = Network(hosts)
        self.ttl = ttl
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.procs: list[Proc] = []
        self.etcd: Proc | None = None
        self.etcd_data = self.dir / "etcd-data"
        self.cells: dict[str, Proc] = {}  # "host/cell" -> its process

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Bed:
        try:
            self.network.__enter__()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, delete the network and the run's directory. A second Ctrl-C
        while this runs is ignored: it would leave namespaces and processes behind."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in reversed(self.procs):
                # Gone already: the namespace cleanup SIGKILLs whatever is left.
                with contextlib.suppress(OSError):
                    proc.stop(timeout=5.0)
            self.network.__exit__(None, None, None)
            if self.keep:
                print(f"kept {self.dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    def __getitem__(self, name: str) -> Host:
        return self.network[name]

    @property
    def registry(self) -> str:
        return f"etcd://{self['etcd'].address}:{ETCD_PORT}"

    def _state_of(self, host: str) -> Path:
        """The host's own state directory, holding the bed's one development CA: the hosts
        are one trust domain, as machines whose identities one issuer signs (each host
        making a CA of its own, no host could verify another's cells)."""
        state = self.dir / f"state-{host}"
        if not state.exists():
            from orchestro.security.ca import DevelopmentCA
            from orchestro.security.spiffe import DEFAULT_TRUST_DOMAIN

            shared = self.dir / "trust" / "ca"
            if not shared.exists():
                shared.parent.mkdir(mode=0o700)
                DevelopmentCA.load_or_create(shared, trust_domain=DEFAULT_TRUST_DOMAIN)
            state.mkdir(mode=0o700)
            shutil.copytree(shared, state / "ca")  # modes kept: the key stays 0600
        return state

    def spawn(
        self, host: str, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> Proc:
        """Start ``args`` inside ``host``, output to a file, in a session of its own (a Ctrl-C
        to the bed reaches the bed, which stops its processes in order)."""
        where = self[host]
        log = self.dir / f"{host}-{name}-{len(self.procs)}.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
            "ORCHESTRO_STATE_DIR": str(self._state_of(host)),
            "BED_HOST": host,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                where.cmd(*args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=self.dir,
                start_new_session=True,
            )
        proc = Proc(name, where, popen, log, args)
        self.procs.append(proc)
        return proc

    # -- etcd ------------------------------------------------------------------------------
    def start_etcd(self) -> Proc:
        """etcd on the etcd host, data in the run's directory (kept across restarts)."""
        host = self["etcd"]
        client = f"http://{host.address}:{ETCD_PORT}"
        self.etcd = self.spawn(
            "etcd",
            "etcd",
            [
                "etcd",
                "--name",
                "bed",
                "--data-dir",
                str(self.etcd_data),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "bed=http://127.0.0.1:2380",
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ],
        )
        self.wait_etcd()
        return self.etcd

    def wait_etcd(self, timeout: float = 20.0) -> None:
        url = f"http://{self['etcd'].address}:{ETCD_PORT}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = http_get(self["front"], url, 1.0)
            if status == 200 and b"true" in body:
                return
            if self.etcd is not None and not self.etcd.alive():
                raise BedError(f"etcd exited:\n{self.etcd.tail()}")
            time.sleep(0.1)
        raise BedError("etcd did not become healthy in 20 s")

    def instances(self, via: str = "front") -> list[dict[str, Any]]:
        """The instances registered in etcd, read over its JSON API from ``via``."""
        import base64
        import http.client

        prefix = b"/orchestro/instances/"
        end = bytearray(prefix)
        end[-1] += 1
        body = json.dumps(
            {
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(bytes(end)).decode(),
            }
        )

        def read() -> list[dict[str, Any]]:
            conn = http.client.HTTPConnection(self["etcd"].address, ETCD_PORT, timeout=2)
            try:
                conn.request("POST", "/v3/kv/range", body)
                answer = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            return [json.loads(base64.b64decode(kv["value"])) for kv in answer.get("kvs", [])]

        return in_netns(self[via], read)

    def ls(self, via: str = "front") -> list[dict[str, Any]]:
        """``orchestro ls --json`` run inside ``via`` (the real command users run)."""
        out = self[via].run(
            sys.executable, "-m", "orchestro", "ls", "--registry", self.registry, "--json"
        )
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    # -- cells -----------------------------------------------------------------------------
    def start_cell(
        self,
        host: str,
        cell: str,
        *,
        port: int | None = None,
        replicas: int | None = None,
        proxied: bool = False,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Proc:
        """``python -m orchestro run bench.hosts.cells --cell CELL`` on ``host``, registered
        in etcd with the host's address. ``proxied``: the cell listens on the host's loopback
        and the bed's TCP proxy (bench.hosts.proxy) serves its port on the host's address."""
        where = self[host]
        port = port or (8080 if cell == "front" else 8081)
        listen = "127.0.0.1" if proxied else where.address
        args = [
            sys.executable,
            "-m",
            "orchestro",
            "run",
            "bench.hosts.cells",
            "--cell",
            cell,
            "--port",
            str(port),
            "--host",
            listen,
            "--advertise-host",
            where.address,
            "--registry",
            self.registry,
            "--registry-ttl",
            str(self.ttl),
            "--access-log",
            "false",
            "--metrics",
            "false",
            "--log-format",
            "text",
        ]
        if replicas is not None:
            args += ["--replicas", str(replicas)]
        if proxied:
            mode = self.dir / f"proxy-{host}-{port}.json"
            mode.write_text("{}")
            proxy = self.spawn(
                host,
                f"proxy{port}",
                [
                    sys.executable,
                    "-m",
                    "bench.hosts.proxy",
                    f"{where.address}:{port}",
                    f"127.0.0.1:{port}",
                    str(mode),
                ],
            )
            self.cells[f"{host}/proxy{port}"] = proxy
        proc = self.spawn(host, cell, args, env)
        self.cells[f"{host}/{cell}:{port}"] = proc
        if wait:
            self.wait_serving(host, port, proc, replicas=replicas)
        return proc

    def wait_serving(
        self, host: str, port: int, proc: Proc, timeout: float = 30.0, replicas: int | None = None
    ) -> None:
        """The cell answers /readyz from the frontend host and is listed in etcd (with
        ``replicas``: that many instances on the host, each registered with its replica's
        private port)."""
        where = self[host]
        deadline = time.monotonic() + timeout
        url = f"http://{where.address}:{port}/readyz"
        while time.monotonic() < deadline:
            if not proc.alive():
                raise BedError(f"{proc.name} on {host} exited:\n{proc.tail()}")
            status, _, _ = http_get(self["front"], url, 1.0)
            if status == 200:
                listed = [(i["host"], i["port"]) for i in self.instances()]
                if replicas is None and (where.address, port) in listed:
                    return
                if replicas is not None and [h for h, _ in listed].count(where.address) >= replicas:
                    return
            time.sleep(0.1)
        raise BedError(f"{proc.name} on {host}:{port} did not serve in {timeout} s:\n{proc.tail()}")

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process in ``host`` (all started by the bed); the PIDs killed. Fails
        unless the namespace is empty afterwards."""
        where = self[host]
        pids = where.pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while where.pids():
            if time.monotonic() > deadline:
                raise BedError(f"processes survive SIGKILL in {host}: {where.pids()}")
            time.sleep(0.02)
        for proc in self.procs:
            if proc.host == where:
                proc.popen.wait()
        return pids

    def answering(self, host: str, port: int) -> str:
        return tcp_state(self["front"], self[host].address, port, 0.5)

    # -- load ------------------------------------------------------------------------------
    @contextmanager
    def load(self, rate: float = 100.0, host: str = "front", port: int = 8080) -> Iterator[Load]:
        """Open-loop load through the frontend cell from inside its host, for the block."""
        out = self.dir / f"load-{len(self.procs)}.jsonl"
        url = f"http://{self[host].address}:{port}/work"
        proc = self.spawn(
            host, "load", [sys.executable, "-m", "bench.hosts.load", url, str(out), str(rate)]
        )
        load = Load(proc, out)
        started = out.with_suffix(".started")
        deadline = time.monotonic() + 20
        while not started.exists():
            if not proc.alive() or time.monotonic() > deadline:
                raise BedError(f"the load generator did not start:\n{proc.tail()}")
            time.sleep(0.05)
        try:
            yield load
        finally:
            load.finish()


class Load:
    """The load generator's process and, once finished, its per-call records."""

    def __init__(self, proc: Proc, out: Path) -> None:
        self.proc = proc
        self.out = out
        self.records: list[tuple[float, float, int, str]] = []

    def so_far(self) -> list[tuple[float, float, int, str]]:
        """The calls finished so far (flushed every 0.5 s by the load generator)."""
        partial = self.out.with_suffix(".partial")
        if not partial.exists():
            return []
        lines = partial.read_text().splitlines()
        return [tuple(json.loads(line)) for line in lines if line.endswith("]")]  # type: ignore[misc]

    def finish(self) -> None:
        if self.proc.alive():
            self.proc.signal(signal.SIGTERM)
            try:
                self.proc.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.popen.kill()
                self.proc.popen.wait()
                raise BedError("the load generator did not stop in 30 s") from None
        if not self.out.exists():
            raise BedError(f"the load generator wrote no records:\n{self.proc.tail()}")
        self.records = [tuple(json.loads(line)) for line in self.out.read_text().splitlines()]  # type: ignore[misc]
