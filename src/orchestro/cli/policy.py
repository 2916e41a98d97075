"""``orchestro policy TARGET``: who calls whom in the cells' code, and who may.

The call graph is read from the cells' ``mesh.client(...)`` attributes
(:func:`orchestro.mesh.clients_of`); for every internal service the command prints the rule
that applies (declared on the service, on the cell, or none) and what ``--policy strict``
would enforce where nothing is declared, and warns where the two disagree: a caller the code
has that a declared list refuses, a listed cell whose code never calls.

```text
$ python -m orchestro policy examples/vault.py
calls (from mesh.client attributes):
  auditor -> vault
  ...
```
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..cell.spec import CellSpec, spec_of
from ..security.policy import access_rule
from .importer import load_cells
from .run import call_graph

__all__ = ["add_parser", "policy", "report"]


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "policy",
        help="print the call graph of TARGET's cells and the allow-lists it implies",
        description="Print who calls whom in TARGET's cells (their mesh.client(...) "
        "attributes), the access rule of every internal service, and the allow-lists the "
        "code implies: what `orchestro run --policy strict` enforces where nothing is "
        "declared.",
    )
    parser.add_argument("target", metavar="TARGET", help="pkg.module[:CellClass] or path.py")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.set_defaults(handler=policy)


def report(cells: Sequence[type[Any]]) -> dict[str, Any]:
    """The call graph, each internal service's rule, and the disagreements between them."""
    specs = [spec_of(c) for c in cells]
    callers = call_graph(cells)
    edges = sorted((caller, callee) for callee, found in callers.items() for caller in found)
    services = []
    warnings = []
    refusing: dict[tuple[str, str], list[str]] = {}  # (caller, callee) -> operations
    for spec in specs:
        derived = callers.get(spec.name, ())
        for op in spec.operations:
            if not op.service.internal:
                continue
            declared = access_rule(
                cell=spec.name,
                method=op.service.method,
                path=op.service.path,
                internal=True,
                cell_allow=spec.allow,
                service_allow=op.service.allow,
            )
            strict = access_rule(
                cell=spec.name,
                method=op.service.method,
                path=op.service.path,
                internal=True,
                cell_allow=spec.allow,
                service_allow=op.service.allow,
                derived=derived,
            )
            allowed = None if declared.allow is None else sorted(declared.allow)
            services.append(
                {
                    "cell": spec.name,
                    "operation": declared.operation,
                    "declared_on": None if allowed is None else declared.declared_on,
                    "allow": allowed,
                    "strict": sorted(strict.allow or ()),
                    "callers_in_code": list(derived),
                }
            )
            if allowed is not None:
                for caller in derived:
                    if caller not in allowed:
                        refusing.setdefault((caller, spec.name), []).append(declared.operation)
    for (caller, callee), operations in sorted(refusing.items()):
        warnings.append(
            f"{caller} calls {callee}, whose {', '.join(operations)} refuse it with 403 "
            "(allow= does not list it): if it calls them, add it there"
        )
    for spec in specs:
        listed = set(spec.allow or ()) | {
            name for op in spec.operations for name in (op.service.allow or ())
        }
        for name in sorted(listed - set(callers.get(spec.name, ()))):
            warnings.append(
                f"{spec.name} allows {name}, but no cell of this target calls it "
                "(a cell of another target may)"
            )
    return {
        "calls": [{"caller": a, "callee": b} for a, b in edges],
        "services": services,
        "implied": {
            spec.name: list(callers.get(spec.name, ())) for spec in specs if _has_internal(spec)
        },
        "warnings": warnings,
    }


def _has_internal(spec: CellSpec) -> bool:
    return any(op.service.internal for op in spec.operations)


def policy(args: argparse.Namespace) -> int:
    found = report(load_cells(args.target))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print("calls (from mesh.client attributes):")
    for edge in found["calls"]:
        print(f"  {edge['caller']} -> {edge['callee']}")
    if not found["calls"]:
        print("  (none)")
    print("internal services:")
    width = max((len(f"{s['cell']} {s['operation']}") for s in found["services"]), default=0)
    for service in found["services"]:
        name = f"{service['cell']} {service['operation']}".ljust(width)
        if service["allow"] is None:
            rule = "any cell of the trust domain (nothing declared)"
        else:
            rule = f"allow={service['allow']} (declared on the {service['declared_on']})"
        print(f"  {name}  {rule}; strict: {service['strict']}")
    if not found["services"]:
        print("  (none)")
    print("allow-lists the code implies (--policy strict, where nothing is declared):")
    for cell, names in found["implied"].items():
        print(f'  @cell("{cell}", allow={json.dumps(names)})')
    for warning in found["warnings"]:
        print(f"warning: {warning}")
    return 0
