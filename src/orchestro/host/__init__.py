"""The composition root: a :class:`CellHost` wires one cell to its gateway, listeners,
mesh, registry record, identity and telemetry, and runs its lifecycle (start, drain).

It sits above the gateway and the mesh, which know nothing of each other, and below the
controller and the CLI, which run hosts.
"""

from .cell import CellHost, CellState

__all__ = ["CellHost", "CellState"]
