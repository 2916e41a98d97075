"""``orchestro ls``: the cells and instances in the registry, as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigFile, RegistrySettings, load_settings
from ..errors import DiscoveryError
from ..registry import Instance, open_registry
from .options import add_settings_flags, settings_flags

__all__ = ["add_parser", "ls"]


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ls",
        help="list the cells and instances in the registry",
        description="List every live instance of every cell in the registry.",
    )
    add_settings_flags(parser, RegistrySettings, only=("registry",))
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="configuration file (default: ./orchestro.toml)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.set_defaults(handler=ls)


def ls(args: argparse.Namespace) -> int:
    file = ConfigFile.load(args.config)
    settings = load_settings(
        RegistrySettings,
        settings_flags(args, RegistrySettings),
        file.section("registry"),
        file.where("registry"),
    )
    registry = open_registry(settings.registry, ttl=settings.registry_ttl)

    async def fetch() -> Sequence[Instance]:
        try:
            async with asyncio.timeout(5):
                return await registry.list()
        except TimeoutError:
            raise DiscoveryError(f"registry {registry.url} did not answer within 5 s") from None
        finally:
            await registry.aclose()

    instances = sorted(asyncio.run(fetch()), key=lambda i: (i.cell, i.started_at, i.id))
    now = time.time()
    if args.json:
        rows = [
            {**i.model_dump(mode="json"), "url": i.url, "age_seconds": round(now - i.started_at, 3)}
            for i in instances
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not instances:
        print(f"no cells registered in {registry.url}")
        return 0
    table = [("CELL", "INSTANCE", "ADDRESS", "STATE", "AGE", "PID", "HOST")]
    table += [
        (i.cell, i.id, i.url, i.state.value, _age(now - i.started_at), str(i.pid), i.hostname)
        for i in instances
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
