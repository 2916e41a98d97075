"""``orchestro run TARGET``: host the target's cells in this process until a signal.

SIGTERM, SIGINT or SIGHUP drains every cell under one deadline (readiness goes false,
listeners close, requests in flight finish, ``on_stop`` runs) and exits 0; repeats never
shorten it, and a person's second Ctrl-C (a SIGINT a second or more after the first) exits at
once, deregistering first (130). The rules are :mod:`.signals`'; the table of every signal in
every mode is docs/concepts/lifecycle.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..background import Background
from ..cell.scaling import MAX_REPLICAS, scalings_from_config
from ..cell.spec import spec_of
from ..config import (
    AuthSettings,
    ConfigFile,
    GatewaySettings,
    RegistrySettings,
    RunSettings,
    TelemetrySettings,
    load_settings,
)
from ..errors import ConfigurationError, StartupError
from ..host import CellHost
from ..mesh import Mesh, callee_name, clients_of
from ..mesh.policy import policies_from_file
from ..observability import configure, configure_logging
from ..observability.buffer import flush_all
from ..registry import Registration, RegistryView, open_registry
from ..security.boundary import CellSecurity
from ..security.policy import PolicyMode
from ..security.settings import SecuritySettings
from .importer import load_cells
from .options import add_settings_flags, settings_flags
from .signals import Mode, StopSignals, ignore_after_loop

__all__ = ["add_parser", "run"]

_log = logging.getLogger("orchestro.run")
# The [security] settings that are also flags (the files and lifetimes live in the file/env).
SECURITY_FLAGS = ("mesh_tls", "mesh_port", "policy")
# A forced exit deregisters within this many seconds, then exits whatever the registry does.
FORCED_EXIT_BOUND = 1.0


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the cells of a module or file",
        description="Run every cell of TARGET (pkg.module, pkg.module:CellClass or "
        "path/to/file.py), each on its own port, until SIGTERM or SIGINT.",
    )
    parser.add_argument("target", metavar="TARGET", help="pkg.module[:CellClass] or path.py")
    parser.add_argument(
        "--cell",
        dest="cells",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this cell (repeatable)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port of the one cell being run (0 picks a free one)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="configuration file (default: ./orchestro.toml, or [tool.orchestro] in "
        "./pyproject.toml)",
    )
    add_settings_flags(parser, RunSettings)
    add_settings_flags(parser, GatewaySettings)
    add_settings_flags(parser, RegistrySettings)
    add_settings_flags(parser, TelemetrySettings)
    add_settings_flags(parser, SecuritySettings, SECURITY_FLAGS)
    parser.add_argument(
        "--replicas",
        type=_replicas,
        default=None,
        metavar="N",
        help="run N replica processes of each cell behind its one port, supervised (restarted "
        "when they crash or hang); default: the cell's Scaling(min=...), or 1 in this process",
    )
    parser.add_argument(
        "--admin-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="port of the controller's admin API on 127.0.0.1 (default: a free one)",
    )
    # A replica started by the controller: serve the inherited socket FD too.
    parser.add_argument("--shared-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def _replicas(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of replicas") from None
    if not 1 <= count <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{count} replicas: use 1-{MAX_REPLICAS}")
    return count


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def run(args: argparse.Namespace) -> int:
    file = ConfigFile.load(args.config)
    run_settings = load_settings(
        RunSettings, settings_flags(args, RunSettings), file.section("run"), file.where("run")
    )
    gateway = load_settings(
        GatewaySettings,
        settings_flags(args, GatewaySettings),
        file.section("gateway"),
        file.where("gateway"),
    )
    discovery = load_settings(
        RegistrySettings,
        settings_flags(args, RegistrySettings),
        file.section("registry"),
        file.where("registry"),
    )
    observing = load_settings(
        TelemetrySettings,
        settings_flags(args, TelemetrySettings),
        file.section("telemetry"),
        file.where("telemetry"),
    )
    tokens = load_settings(AuthSettings, {}, file.section("auth"), file.where("auth"))
    security = load_settings(
        SecuritySettings,
        settings_flags(args, SecuritySettings),
        file.section("security"),
        file.where("security"),
    )
    policies = policies_from_file(file)
    loop_factory = _loop_factory(run_settings.loop)
    cells = load_cells(args.target, args.cells)
    if args.port is not None and len(cells) != 1:
        raise ConfigurationError(
            f"--port sets one cell's port, but {args.target!r} has {len(cells)} cells: add "
            "--cell NAME, or set each cell's port in @cell(port=...)"
        )
    if security.mesh_port and len(cells) != 1:
        raise ConfigurationError(
            f"--mesh-port sets one cell's mesh port, but {args.target!r} has {len(cells)} "
            "cells: add --cell NAME, or leave it 0 (each cell picks a free one)"
        )
    graph = call_graph(load_cells(args.target, [])) if security.policy != "declared" else None
    if args.shared_fd is None:
        specs = [spec_of(c) for c in cells]
        declared = scalings_from_config({x.name: x.scaling for x in specs}, file)
        if args.replicas is not None or any(s.min > 1 or s.autoscales for s in declared.values()):
            from .supervise import supervise

            configure_logging(run_settings.log_level, observing.log_format)
            return supervise(
                args,
                specs,
                declared,
                run_settings.host,
                loop_factory,
                gateway.drain_timeout,
                discovery,
            )
    shared = socket.socket(fileno=args.shared_fd) if args.shared_fd is not None else None
    registry = open_registry(discovery.registry, ttl=discovery.registry_ttl)
    registration = Registration(registry, say=print_line)
    # The process's view of every cell, which its mesh resolves from without waiting.
    view = RegistryView(registry)
    calls = Mesh(view, policies=policies, zone=discovery.zone)
    labels = {"zone": discovery.zone} if discovery.zone else {}
    mode = PolicyMode.AUDIT if security.policy == "audit" else PolicyMode.ENFORCE
    hosts = [
        CellHost(
            cls,
            settings=gateway,
            host=run_settings.host,
            port=args.port,
            registration=registration,
            advertise_host=discovery.advertise_host,
            labels=labels,
            mesh=calls,
            telemetry=observing,
            shared_socket=shared,
            auth=tokens,
            # Identities: the development CA on first run (in the state directory), or the
            # files an issuer writes; kept fresh while serving (see _serve_registered).
            security=CellSecurity.open(spec_of(cls).name, security) if security.mesh_tls else None,
            mesh_port=security.mesh_port,
            policy=mode,
            derived=None if graph is None else graph.get(spec_of(cls).name, ()),
        )
        for cls in cells
    ]
    first = hosts[0]
    configure_logging(
        run_settings.log_level,
        observing.log_format,
        cell=first.name,
        instance=first.instance_id,
    )
    if observing.metrics:
        # One provider per process, named after its (first) cell.
        configure(
            service_name=first.name, instance_id=first.instance_id, version=first.spec.version
        )
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        controller = os.getppid() if shared is not None else None
        code = runner.run(_serve_registered(hosts, registration, calls, controller))
    ignore_after_loop()
    if shared is not None:
        _exit_replica(code, flush_telemetry=observing.metrics)
    return code


def _exit_replica(code: int, *, flush_telemetry: bool) -> NoReturn:
    """A drained replica leaves without the interpreter's teardown, as multiprocessing's
    children do: its daemon threads (the log writer, executors' workers) meeting a finalising
    interpreter crashed a replica with SIGSEGV after a clean drain, which its controller
    rightly counts as a failure. What the teardown would flush is flushed here first."""
    if flush_telemetry:
        with contextlib.suppress(Exception):
            configure().shutdown()  # the SDK's exit hook: exporters flush their last batch
    logging.shutdown()  # orchestro's log writer writes what it holds
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def call_graph(cells: Sequence[type[Any]]) -> dict[str, tuple[str, ...]]:
    """Who calls whom in ``cells``' code: each cell's callers, by name (a cell's
    ``mesh.client(X)`` attributes are its edges to X)."""
    callers: dict[str, set[str]] = {spec_of(c).name: set() for c in cells}
    for cls in cells:
        name = spec_of(cls).name
        for target in clients_of(cls).values():
            callee = callee_name(target)
            if callee is not None:
                callers.setdefault(callee, set()).add(name)
    return {callee: tuple(sorted(found)) for callee, found in callers.items()}


async def _serve_registered(
    hosts: Sequence[CellHost], registration: Registration, calls: Mesh, controller: int | None
) -> int:
    registry = registration.registry
    await calls.start()
    renewals = Background("identities")
    for host in hosts:
        if host.security is not None:
            renewals.start(f"identity of {host.name}", host.security.keep_fresh)
    try:
        return await serve(hosts, controller=controller, registration=registration)
    finally:
        await renewals.aclose()
        await registration.aclose()
        await calls.aclose()
        await calls.view.aclose()
        await registry.aclose()


async def serve(
    hosts: Sequence[CellHost],
    *,
    announce: Callable[[str], None] | None = None,
    controller: int | None = None,
    registration: Registration | None = None,
) -> int:
    """Start ``hosts``, serve until SIGTERM/SIGINT/SIGHUP, drain them all; the exit code.

    ``controller``: the pid of the controller this process is a replica of; if it goes away
    (even SIGKILLed), the replica drains and exits rather than living on as an orphan. A
    forced exit (a person's second Ctrl-C; the controller's SIGINT to a draining replica)
    deregisters ``registration``'s instances, then exits 130 at once.
    """
    say = announce or print_line
    loop = asyncio.get_running_loop()
    stop = StopSignals(Mode.REPLICA if controller is not None else Mode.SINGLE, say=say)
    stop.install(loop)  # never removed: the loop's close does that, just before the exit
    if controller is not None:

        def watch() -> None:
            if os.getppid() != controller:
                if not stop.drain.is_set():
                    say("the controller is gone: draining")
                    stop.drain.set()
            else:
                loop.call_later(0.5, watch)

        loop.call_later(0.5, watch)

    async def lifecycle() -> int:
        started: list[CellHost] = []
        try:
            for host in hosts:
                await host.start()
                started.append(host)
                ops = len(host.spec.operations)
                mesh = f"; mesh on {host.mesh_url}" if host.mesh_url else ""
                say(
                    f"cell {host.name} serving on {host.url} "
                    f"({ops} service{'s' if ops != 1 else ''}; OpenAPI at "
                    f"{host.url}/openapi.json{mesh})"
                )
        except StartupError:
            await _drain(started)
            raise
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so that collections while serving scan request garbage only.
        gc.collect()
        gc.freeze()
        await stop.drain.wait()
        return 0 if await _drain(started) else 1

    main = asyncio.create_task(lifecycle(), name="orchestro-serve")
    forced = asyncio.create_task(stop.force.wait(), name="orchestro-force")
    await asyncio.wait({main, forced}, return_when=asyncio.FIRST_COMPLETED)
    if main.done():
        forced.cancel()
        return main.result()
    # Forced: no drain, but no record left behind either (bounded: this is the fast way out).
    # Stop the drain first, so that a state write of it still in flight cannot land after
    # the deregistration (a ghost record until the TTL).
    main.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(FORCED_EXIT_BOUND / 2):
            await asyncio.wait({main})
    if registration is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FORCED_EXIT_BOUND):
                await registration.aclose(within=FORCED_EXIT_BOUND / 2)
    flush_all(FORCED_EXIT_BOUND / 10)  # the log lines still buffered (os._exit skips it)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(130)


async def _drain(hosts: Sequence[CellHost]) -> bool:
    results = await asyncio.gather(*(h.drain() for h in hosts), return_exceptions=True)
    ok = True
    for host, result in zip(hosts, results, strict=True):
        if isinstance(result, BaseException):
            ok = False
            _log.error("cell %s failed while stopping: %r", host.name, result, exc_info=result)
    return ok


def print_line(line: str) -> None:
    # Never let a closed stdout (the terminal or pipe went away) stop a drain.
    with contextlib.suppress(OSError, ValueError):
        print(f"orchestro: {line}", flush=True)


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "--loop uvloop: uvloop is not installed; pip install 'orchestro[uvloop]' or "
                "use --loop asyncio"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
