"""``orchestro status`` and ``orchestro scale``: talk to the controllers on this machine.

A controller (``orchestro run`` with replicas) serves an admin API on loopback and records
its address under the runtime directory; these commands find it there, or take ``--admin``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import ConfigurationError, OrchestroError

__all__ = ["add_parsers"]


def add_parsers(subparsers: Any) -> None:
    status: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show the cells a controller runs: desired vs actual replicas",
        description="Show every cell run by the controllers on this machine: desired and "
        "actual replicas, each replica's state, and recent events.",
    )
    status.add_argument("--admin", metavar="URL", help="a controller's admin API URL")
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    status.add_argument(
        "--events", type=int, default=5, metavar="N", help="recent events to show (default 5)"
    )
    status.set_defaults(handler=show_status)
    scale: argparse.ArgumentParser = subparsers.add_parser(
        "scale",
        help="set the desired replicas of a cell",
        description="Set the desired replicas of CELL, within its Scaling(min=, max=).",
    )
    scale.add_argument("cell", metavar="CELL")
    scale.add_argument("replicas", metavar="N", type=int)
    scale.add_argument("--admin", metavar="URL", help="a controller's admin API URL")
    scale.set_defaults(handler=set_scale)


def _controllers(admin: str | None) -> list[str]:
    if admin:
        return [admin.rstrip("/")]
    from ..controller.admin import find_controllers

    found = [c["url"] for c in find_controllers()]
    if not found:
        raise ConfigurationError(
            "no controller is running on this machine: start one with "
            "`python -m orchestro run TARGET --replicas N` (or give --admin URL)"
        )
    return found


def _request(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail") or exc.reason
        except ValueError:
            detail = exc.reason
        raise ConfigurationError(str(detail)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise OrchestroError(f"the controller at {url} does not answer ({exc})") from None


def show_status(args: argparse.Namespace) -> int:
    everything = []
    for url in _controllers(args.admin):
        cells = _request(f"{url}/cells")
        events = _request(f"{url}/events")[-args.events :] if args.events else []
        everything.append({"admin": url, "cells": cells, "events": events})
    if args.json:
        print(json.dumps(everything, indent=2))
        return 0
    for controller in everything:
        rows = [("CELL", "PORT", "DESIRED", "ACTUAL", "READY", "SCALING", "REPLICAS")]
        for cell in controller["cells"]:
            replicas = " ".join(
                f"{r['index']}:{r['state']}" + (f"({r['in_flight']})" if r["in_flight"] else "")
                for r in cell["replicas"]
            )
            # A fixed count (min == max, or none declared) is what `scale` sets: no range.
            scaling = f"{cell['min']}..{cell['max']} auto" if cell["autoscaling"] else "fixed"
            rows.append(
                (
                    cell["cell"],
                    str(cell["port"]),
                    str(cell["desired"]),
                    str(cell["actual"]),
                    str(cell["ready"]),
                    scaling,
                    replicas,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print(f"controller {controller['admin']}")
        for row in rows:
            print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
        for event in controller["events"]:
            where = event["cell"] + (
                f"[{event['replica']}]" if event["replica"] is not None else ""
            )
            print(f"  event {event['seq']}: {where} {event['kind']} {event['detail']}".rstrip())
    return 0


def set_scale(args: argparse.Namespace) -> int:
    for url in _controllers(args.admin):
        cells = {c["cell"] for c in _request(f"{url}/cells")}
        if args.cell in cells:
            cell = _request(f"{url}/cells/{args.cell}/scale", {"replicas": args.replicas})
            desired = cell["desired"]
            print(
                f"orchestro: cell {args.cell}: desired {desired} "
                f"replica{'' if desired == 1 else 's'} (actual {cell['actual']})"
            )
            return 0
    raise ConfigurationError(
        f"no controller on this machine runs cell {args.cell!r}; `python -m orchestro status` "
        "lists them"
    )
