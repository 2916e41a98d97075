"""How a cell scales: the :class:`Scaling` a cell declares (``@cell(scaling=...)``) or a
configuration file sets (``[scaling.cells.NAME]``). The controller's scaler
(:mod:`orchestro.controller.scaler`) reads it; the names of its fields and their defaults
follow the systems that scaler is modelled on (Knative's KPA, Kubernetes' HPA).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import ConfigFile
from ..errors import ConfigurationError

__all__ = [
    "MAX_REPLICAS",
    "Metric",
    "Scaling",
    "merge_scaling",
    "scaling_from_file",
    "scalings_from_config",
]

MAX_REPLICAS = 256  # the most replicas of one cell a controller runs (`orchestro scale`)

Metric = Literal["concurrency", "rps", "cpu", "latency"]


class Scaling(BaseModel):
    """How a cell scales. Every default is its source system's default (see
    :mod:`orchestro.controller.scaler`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int = Field(
        default=1,
        ge=0,
        description="Fewest replicas. 0 scales to zero when idle for a stable window; the "
        "controller starts a replica when a connection arrives (the first request waits for it).",
    )
    max: int = Field(default=1, ge=1, description="Most replicas (1: no auto-scaling).")
    metric: Metric = Field(
        default="concurrency",
        description="What a replica is sized by: in-flight requests ('concurrency'), "
        "requests/s ('rps'), CPU cores used ('cpu') or p95 latency in seconds ('latency').",
    )
    target: float = Field(
        default=100.0,
        gt=0,
        description="Target per replica (concurrency, rps, cpu cores) or p95 latency (s). "
        "Knative: container-concurrency-target-default 100.",
    )
    utilization: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="Share of the target to aim at, leaving headroom for bursts. Knative: "
        "container-concurrency-target-percentage 70%.",
    )
    stable_window: float = Field(
        default=60.0, gt=0, description="Seconds of load averaged for decisions. Knative: 60 s."
    )
    panic_window: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="The panic window, as a share of the stable window. Knative: 10%.",
    )
    panic_threshold: float = Field(
        default=2.0,
        gt=1,
        description="Panic when the panic window needs this many times the ready replicas. "
        "Knative: 200%.",
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="No change while the load is within this share of the target. HPA: 10%.",
    )
    scale_down_delay: float = Field(
        default=300.0,
        ge=0,
        description="Scale down only to the highest recommendation of this many seconds. "
        "HPA: scale-down stabilization window 300 s.",
    )
    max_scale_up_rate: float = Field(
        default=1000.0, ge=1, description="At most this many times the ready replicas. Knative."
    )
    max_scale_down_rate: float = Field(
        default=2.0, ge=1, description="At least ready / this many replicas. Knative."
    )
    tick: float = Field(
        default=2.0, gt=0, description="Seconds between decisions. Knative: tick-interval 2 s."
    )

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self

    @property
    def per_replica(self) -> float:
        """What one replica is meant to carry."""
        return self.target * self.utilization

    @property
    def autoscales(self) -> bool:
        return self.max > self.min


def scaling_from_file(
    sections: dict[str, Any], where: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    """The ``[scaling.cells.NAME]`` tables of a configuration file, checked against
    :class:`Scaling`'s keys (values are validated when merged with a cell's own)."""
    table = sections.get("scaling", {})
    if not isinstance(table, dict) or set(table) - {"cells"}:
        raise ConfigurationError(
            f"{where('scaling')}: put each cell's settings in [scaling.cells.NAME]"
        )
    found: dict[str, dict[str, Any]] = {}
    for cell, values in dict(table.get("cells", {})).items():
        if not isinstance(values, dict):
            raise ConfigurationError(f"{where(f'scaling.cells.{cell}')}: must be a table")
        unknown = set(values) - set(Scaling.model_fields)
        if unknown:
            raise ConfigurationError(
                f"{where(f'scaling.cells.{cell}')}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"the keys are {', '.join(Scaling.model_fields)}"
            )
        found[cell] = dict(values)
    return found


def merge_scaling(base: Scaling, values: dict[str, Any], where: str) -> Scaling:
    """``base`` (the cell's own) with the file's ``values``; errors name the key and file."""
    if not values:
        return base
    try:
        return Scaling.model_validate({**base.model_dump(), **values})
    except ValidationError as exc:
        problems = [
            f"{where} {err['loc'][0] if err['loc'] else ''}: {err['msg']} "
            f"(got {err.get('input')!r})".replace("  ", " ")
            for err in exc.errors(include_url=False)
        ]
        raise ConfigurationError("; ".join(problems)) from exc


def scalings_from_config(own: Mapping[str, Scaling], file: ConfigFile) -> dict[str, Scaling]:
    """Each cell's Scaling: its decorator's (``own``, by cell name), then the file's
    ``[scaling.cells.NAME]``."""
    tables = scaling_from_file(file.sections, file.where)
    return {
        name: merge_scaling(scaling, tables.get(name, {}), file.where(f"scaling.cells.{name}"))
        for name, scaling in own.items()
    }
