"""A fleet on one etcd: 1,000 instances in 50 processes, every process watching.

    python bench/fleet.py [--processes 50] [--instances 1000] [--ttl 5] [--window 30]
                          [--probes 20] [--spread 5]

Starts one real etcd on loopback and ``--processes`` Python processes. Each hosts
``instances / processes`` registry records through the real agent (``Registration``: one
lease per process, renewed every TTL/3) and follows the whole prefix through a
``RegistryView``, as a cell process's mesh does — the registry API directly rather than one
gateway per instance, which two cores could not hold at this count. Then it measures:

1. **Steady state** over ``--window`` seconds once every process is registered and watching,
   from etcd's own ``/metrics``: puts (``etcd_mvcc_put_total``), raft proposals committed
   (``etcd_server_proposals_committed_total``: every write etcd makes durable), lease
   renewals (``etcd_debugging_lease_renewed_total``); etcd's CPU from ``/proc/<pid>/stat``
   and its database size (``etcd_mvcc_db_total_size_in_bytes``).
2. **Spread**: the driver registers ``--probes`` new instances, one at a time; each watching
   process reports the wall-clock time (``time.time()``: one clock, since every process
   runs on this machine) at which its view first held the instance, over a loopback TCP
   connection to the driver. The figure is, per probe, the time until the *last* process saw
   it (target p99 <= 500 ms).

Prints one line of figures and the ratios against the targets (ratio <= 1 meets it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the etcd launcher the tests use

from orchestro.registry import Instance, Registration, RegistryView, open_registry  # noqa: E402


async def host(
    url: str, ttl: float, index: int, count: int, cells: int, port: int, delay: float
) -> None:
    """One fleet process: ``count`` instances under one lease, and a view of the whole fleet
    that reports to the driver when it first holds each probe instance."""
    await asyncio.sleep(delay)  # a fleet comes up over seconds, as a rolling deploy does
    registry = open_registry(url, ttl=ttl)
    registration = Registration(registry)
    for n in range(count):
        cell = f"cell-{(index * count + n) % cells}"
        instance = Instance(
            cell=cell, id=f"p{index}-i{n}", host="127.0.0.1", port=10000 + n, pid=os.getpid()
        )
        await registration.add(instance)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen: set[str] = set()

    def changed(by_cell: dict[str, tuple[Instance, ...]]) -> None:
        now = time.time()
        for instance in by_cell.get("probe", ()):
            if instance.id not in seen:
                seen.add(instance.id)
                event = {"id": instance.id, "seen": now, "proc": index}
                writer.write(json.dumps(event).encode() + b"\n")

    view = RegistryView(registry)  # the same client, as in a cell process (cli/run.py)
    view.on_change(changed)
    await view.start()
    mine = {f"p{index}-i{n}" for n in range(count)}
    # Ready once this process's own records are in etcd, as every other process sees them.
    await view.wait_for(lambda v: mine <= {i.id for xs in v.cells().values() for i in xs})
    writer.write(json.dumps({"ready": index}).encode() + b"\n")
    await reader.read()  # the driver closes the connection: leave
    await view.aclose()
    # Revoking the lease removes all the process's records in one request (deregistering
    # them one by one is the drain's job, not measured here).
    await registry.aclose()


def host_process(log: str, *args: Any) -> None:
    """A forked child: imports are inherited, so fifty start in a second, not a minute."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    asyncio.run(host(*args))


METRICS = (
    "etcd_mvcc_put_total",
    "etcd_server_proposals_committed_total",
    "etcd_debugging_lease_renewed_total",
    "etcd_debugging_lease_granted_total",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_disk_wal_fsync_duration_seconds_sum",
    "etcd_disk_wal_fsync_duration_seconds_count",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def scrape(http: str) -> dict[str, float]:
    """etcd's own counters, read with a bare HTTP/1.0 request (no client library)."""
    host, port = http.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            found[name] = float(value)
    missing = set(METRICS) - set(found)
    if missing:
        raise SystemExit(f"etcd's /metrics lacks {sorted(missing)}: is this etcd 3.4 or later?")
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    args: argparse.Namespace, etcd: Any, listener: socket.socket, children: list[Any]
) -> int:
    per_process = args.instances // args.processes
    url = f"{etcd.url}/fleet"
    ready: set[int] = set()
    all_ready = asyncio.Event()
    seen: dict[str, dict[int, float]] = {}
    writers: list[asyncio.StreamWriter] = []
    arrived = asyncio.Event()

    async def report(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        # Cancelled when the run ends with the connection open: nothing left to read.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await read(reader)

    async def read(reader: asyncio.StreamReader) -> None:
        async for line in reader:
            event = json.loads(line)
            if "ready" in event:
                ready.add(event["ready"])
                if len(ready) == args.processes:
                    all_ready.set()
            else:
                seen.setdefault(event["id"], {})[event["proc"]] = event["seen"]
                arrived.set()

    server = await asyncio.start_server(report, sock=listener)
    try:
        try:
            async with asyncio.timeout(120):
                await all_ready.wait()
        except TimeoutError:
            raise SystemExit(
                f"only {len(ready)}/{args.processes} processes watching after 120 s; "
                f"their log: {args.log}"
            ) from None
        startup = time.monotonic() - args.started

        before, cpu_before, t0 = await scrape(etcd.http), cpu_seconds(etcd.proc.pid), time.time()
        await asyncio.sleep(args.window)
        after, cpu_after, t1 = await scrape(etcd.http), cpu_seconds(etcd.proc.pid), time.time()
        span = t1 - t0

        def rate(name: str) -> float:
            return (after[name] - before[name]) / span

        keys = after["etcd_debugging_mvcc_keys_total"]
        expected = per_process * args.processes
        lost = after["etcd_debugging_lease_granted_total"] - args.processes
        if min(keys, before["etcd_debugging_mvcc_keys_total"]) < expected or lost:
            raise SystemExit(  # a fleet that did not hold together is no measurement
                f"etcd held {before['etcd_debugging_mvcc_keys_total']:.0f} then {keys:.0f} keys "
                f"for {expected} instances, and {lost:.0f} leases were lost and granted again "
                f"(a starved machine?); their log: {args.log}"
            )

        prober = open_registry(url, ttl=args.ttl)
        probe_registration = Registration(prober)
        sent: dict[str, float] = {}
        for n in range(args.probes):
            instance = Instance(cell="probe", id=f"probe-{n}", host="127.0.0.1", port=20000 + n)
            sent[instance.id] = time.time()  # before: a watcher may see it first
            await probe_registration.add(instance)
            await asyncio.sleep(0.2)
        async with asyncio.timeout(30):
            while sum(len(seen.get(i, {})) for i in sent) < args.probes * args.processes:
                arrived.clear()
                await arrived.wait()
        await probe_registration.aclose()
        await prober.aclose()
    finally:
        for writer in writers:
            writer.close()  # each child leaves when its connection closes
        server.close()

    failed = [child.exitcode for child in children if child.exitcode not in (0, None)]
    if failed:  # one that died early (the rest leave after this returns)
        raise SystemExit(f"{len(failed)} fleet processes failed; their log: {args.log}")
    every = [max(seen[i].values()) - sent[i] for i in sent]  # the last process to see it
    each = [t - sent[i] for i in sent for t in seen[i].values()]
    target_ms = 500.0
    write_target = args.processes / args.ttl
    writes = rate("etcd_server_proposals_committed_total")
    renewals = rate("etcd_debugging_lease_renewed_total")
    cpu = (cpu_after - cpu_before) / span * 100
    db = after["etcd_mvcc_db_total_size_in_bytes"]
    p99_every = percentile(every, 0.99) * 1000
    fsyncs = after["etcd_disk_wal_fsync_duration_seconds_count"]
    fsync_ms = after["etcd_disk_wal_fsync_duration_seconds_sum"] / max(1.0, fsyncs) * 1000
    print(
        f"fleet: {per_process * args.processes} instances in {args.processes} processes "
        "(all watching), "
        f"ttl {args.ttl:g} s, up in {startup:.1f} s | "
        f"seen by every process p50 {statistics.median(every) * 1000:.1f} ms "
        f"p99 {p99_every:.1f} ms max {max(every) * 1000:.1f} ms "
        f"(by each: p99 {percentile(each, 0.99) * 1000:.1f} ms) | "
        f"steady over {span:.0f} s: writes (raft proposals) {writes:.2f}/s, "
        f"puts {rate('etcd_mvcc_put_total'):.2f}/s, lease renewals {renewals:.2f}/s, "
        f"leases granted {after['etcd_debugging_lease_granted_total']:.0f} | "
        f"etcd CPU {cpu:.1f}% of a core, db {db / 2**20:.2f} MiB "
        f"(in use {after['etcd_mvcc_db_total_size_in_use_in_bytes'] / 2**20:.2f} MiB), "
        f"keys {keys:.0f}, watchers {after['etcd_debugging_mvcc_watcher_total']:.0f}, "
        f"WAL fsync mean {fsync_ms:.1f} ms ({args.disk})"
    )
    print(
        f"ratios: spread p99/{target_ms:.0f} ms = {p99_every / target_ms:.2f}; "
        f"writes/(processes/ttl = {write_target:.1f}/s) = {writes / write_target:.2f}; "
        f"renewals/(processes/ttl) = {renewals / write_target:.2f} "
        f"(renewed every ttl/3: expected 3.00; not raft writes)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--instances", type=int, default=1000, help="in all, spread evenly")
    parser.add_argument("--cells", type=int, default=50, help="distinct cell names")
    parser.add_argument("--ttl", type=float, default=5.0, help="lease TTL, seconds")
    parser.add_argument("--window", type=float, default=30.0, help="steady-state window, s")
    parser.add_argument(
        "--disk", choices=("memory", "disk"), default="memory",
        help="etcd's data directory: in /dev/shm (default) or on the temporary directory's disk",
    )  # fmt: skip
    parser.add_argument("--spread", type=float, default=5.0, help="start-up spread, s")
    parser.add_argument("--probes", type=int, default=20, help="new instances to time")
    args = parser.parse_args()
    for flag in ("processes", "instances", "cells", "probes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.instances < args.processes:
        parser.error("--instances must be at least --processes (a process hosts one or more)")
    if args.disk == "memory" and not Path("/dev/shm").is_dir():
        parser.error("--disk memory needs /dev/shm; give --disk disk")
    if args.ttl < 1 or args.window <= 0 or args.spread < 0:
        parser.error("--ttl must be at least 1 s, --window above 0 s, --spread 0 s or more")
    from servers import Etcd

    etcd = Etcd()
    if args.disk == "memory":
        # The machine's disk is shared: another process's writes can stall etcd's WAL fsync
        # for seconds (seen: p50 0.1 s, max 8 s), which stalls lease renewals until leases
        # expire. In memory, the run measures etcd and orchestro, not the neighbours' I/O.
        shutil.rmtree(etcd.data)
        etcd.data = Path(tempfile.mkdtemp(prefix="orchestro-etcd-", dir="/dev/shm"))
    etcd.start()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.processes)
    port = listener.getsockname()[1]
    handle, args.log = tempfile.mkstemp(prefix="orchestro-fleet-", suffix=".log")
    os.close(handle)  # kept when the run fails, for its reader
    fork = multiprocessing.get_context("fork")  # before any event loop or thread exists
    children = []
    per_process = args.instances // args.processes
    args.started = time.monotonic()
    try:
        for index in range(args.processes):
            child = fork.Process(
                target=host_process,
                args=(args.log, f"{etcd.url}/fleet", args.ttl, index, per_process, args.cells,
                      port, args.spread * index / args.processes),
            )  # fmt: skip
            child.start()
            children.append(child)
        code = asyncio.run(drive(args, etcd, listener, children))
        os.unlink(args.log)
        return code
    finally:
        deadline = time.monotonic() + 20
        for child in children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
        listener.close()
        failed = sum(child.exitcode != 0 for child in children)
        if failed:
            print(f"{failed} fleet processes failed; their log: {args.log}")
        etcd.close()


if __name__ == "__main__":
    sys.exit(main())
