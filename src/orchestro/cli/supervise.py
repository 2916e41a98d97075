"""``orchestro run`` as the cell controller: replicas of each cell behind its one port,
supervised and scaled (see :mod:`orchestro.controller`).

Each replica is ``orchestro run TARGET --cell NAME --shared-fd FD`` with the flags the
controller was given; the controller serves its admin API on loopback, drains every replica
on SIGTERM/SIGINT (a person's second Ctrl-C: every replica deregisters and exits at once,
exit code 130), and reloads the configuration and rolls the replicas on SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import signal
from collections.abc import Callable, Sequence

from ..background import Background
from ..cell.scaling import MAX_REPLICAS, Scaling, scalings_from_config
from ..cell.spec import CellSpec
from ..config import ConfigFile, GatewaySettings, RegistrySettings, RunSettings, TelemetrySettings
from ..controller.admin import AdminServer
from ..controller.relay import OutputRelay
from ..controller.supervisor import Supervisor, SupervisorSettings
from ..errors import ConfigurationError
from ..registry import open_registry
from ..security.settings import SecuritySettings
from .options import settings_flags
from .signals import Mode, StopSignals, ignore_after_loop

__all__ = ["supervise"]


def supervise(
    args: argparse.Namespace,
    specs: Sequence[CellSpec],
    declared: dict[str, Scaling],
    host: str | None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    drain_timeout: float,
    discovery: RegistrySettings | None = None,
) -> int:
    """Run ``specs`` (with their ``declared`` scaling) as supervised, scaled replicas."""

    def reload() -> dict[str, Scaling]:
        return scalings_from_config(
            {x.name: x.scaling for x in specs}, ConfigFile.load(args.config)
        )

    passed: list[str] = []
    if args.config is not None:
        passed += ["--config", str(args.config)]
    for model in (
        RunSettings,
        GatewaySettings,
        RegistrySettings,
        TelemetrySettings,
        SecuritySettings,
    ):
        for name, value in settings_flags(args, model).items():
            passed += ["--" + name.replace("_", "-"), str(value)]

    def command(spec: CellSpec, fd: int) -> list[str]:
        return [
            "run",
            args.target,
            "--cell",
            spec.name,
            "--port",
            "0",
            "--shared-fd",
            str(fd),
            *passed,
            "--mesh-port",  # last, so it wins: every replica has a mesh listener of its own
            "0",
        ]

    if args.port is not None:  # one cell (checked by run): its public port
        specs = [dataclasses.replace(specs[0], port=args.port)]

    def fixed(found: dict[str, Scaling]) -> dict[str, Scaling]:
        """A cell that does not auto-scale: `orchestro scale` may still set 1..MAX_REPLICAS."""
        return {
            name: scaling
            if scaling.autoscales
            else scaling.model_copy(update={"min": 1, "max": MAX_REPLICAS})
            for name, scaling in found.items()
        }

    plan = []
    for spec in specs:
        scaling = declared[spec.name]
        if (
            args.replicas is not None
            and scaling.autoscales
            and not (scaling.min <= args.replicas <= scaling.max)
        ):
            raise ConfigurationError(
                f"--replicas {args.replicas}: cell {spec.name!r} scales between "
                f"{scaling.min} and {scaling.max} (its Scaling)"
            )
        initial = args.replicas or scaling.min or 1
        plan.append(
            (spec, fixed({spec.name: scaling})[spec.name], initial, scaling.autoscales, scaling)
        )
    found = discovery or RegistrySettings()
    # Every line of the controller and its replicas: never a blocking write to stdout.
    output = OutputRelay()

    def say(line: str) -> None:
        output.line(f"orchestro: {line}")

    supervisor = Supervisor(
        plan,
        command,
        host=host or specs[0].host,
        settings=SupervisorSettings(drain_timeout=drain_timeout),
        say=say,
        reload=reload,
        output=output,
        registry=functools.partial(open_registry, found.registry, ttl=found.registry_ttl),
        manual_max=MAX_REPLICAS,
    )

    async def main() -> int:
        admin = AdminServer(supervisor, args.target)
        url = await admin.start(args.admin_port)
        say(f"controller admin API on {url} (python -m orchestro status)")
        loop = asyncio.get_running_loop()
        stop = StopSignals(Mode.CONTROLLER, say=say)
        stop.install(loop)  # never removed: the loop's close does that, just before the exit
        loop.add_signal_handler(signal.SIGHUP, supervisor.request_reload)

        async def follow_signals() -> None:
            await stop.drain.wait()
            supervisor.stop()
            await stop.force.wait()
            supervisor.force()

        tasks = Background("controller-signals")
        tasks.start("stop", follow_signals)
        try:
            return await supervisor.run()
        finally:
            await tasks.aclose()
            await admin.aclose()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(main())
        ignore_after_loop()
    finally:
        output.close()
    return code
