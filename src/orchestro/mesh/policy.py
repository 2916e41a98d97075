"""Call policy: timeouts, retries, budget, balancing and ejection, with the defaults of the
systems they come from. One model; process defaults come from ``ORCHESTRO_MESH_*``
variables, and code may override it per target cell or per call.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..config import ConfigFile, load_settings
from ..errors import ConfigurationError

__all__ = ["CallPolicy", "Policies", "policies_from_file"]


class CallPolicy(BaseSettings):
    """How the mesh makes a call. Every default names its source."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_MESH_", frozen=True, extra="ignore")

    timeout: float = Field(
        15.0, gt=0, description="Seconds for the whole call, retries included (Envoy: 15 s)."
    )
    attempt_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds one attempt of an idempotent call may take before it is "
        "abandoned and retried on another instance, within the call's timeout (never the "
        "last attempt allowed). Unset: derived per operation from the latencies observed, "
        "as TCP derives its retransmission timeout "
        "(RFC 6298: smoothed latency + 4 x its variation, at least attempt_timeout_min); "
        "Envoy's per_try_timeout is the fixed form, and off by default.",
    )
    attempt_timeout_min: float = Field(
        1.0,
        gt=0,
        description="Floor of the derived attempt timeout (RFC 6298's minimum RTO: 1 s).",
    )
    connect_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds to open a connection; a connect that times out was never "
        "processed and is retried like a refused one (Linkerd's proxy: 1 s; Finagle's "
        "client examples: 1 s; Envoy: 5 s). The process's default policy sets it for the "
        "process's one connection pool.",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts per call, the first included (gRPC: 5; Envoy: 2)."
    )
    backoff_base: float = Field(
        0.025, gt=0, description="First retry backoff, full jitter (Envoy: 25 ms)."
    )
    backoff_max: float = Field(
        0.25, gt=0, description="Longest retry backoff (Envoy: 10 x the base)."
    )
    wait_for_instances: float = Field(
        10.0,
        ge=0,
        description="Seconds a call waits, within its timeout, for a ready instance of its "
        "cell to (re)appear before failing with NoInstancesError; 0 fails at once (gRPC "
        "wait_for_ready waits up to the deadline; Linkerd fails fast after 3 s).",
    )
    unprocessed_backoff_max: float = Field(
        1.0,
        gt=0,
        description="Longest pause between resends of a request refused before it was "
        "processed (connection refused, a 503 marked unprocessed); they start at "
        "backoff_base and double (gRPC: initial 1 s, x1.6, max 120 s for reconnects).",
    )
    retry_budget_ratio: float = Field(
        0.2, ge=0, le=1, description="Retries as a share of requests (Finagle, Linkerd: 20%)."
    )
    retry_budget_min_per_second: float = Field(
        10.0, ge=0, description="Retries always allowed per second (Finagle, Linkerd: 10)."
    )
    retry_budget_window: float = Field(
        10.0, gt=0, description="Seconds the budget counts over (Finagle, Linkerd: 10 s)."
    )
    hedge: bool = Field(
        False,
        description="Send a backup request (idempotent calls only) when the first is slower "
        "than the target's hedge_percentile latency; backups are paid from the retry budget.",
    )
    hedge_percentile: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Latency percentile after which to hedge (Google's tail at scale: p95).",
    )
    hedge_delay: float | None = Field(
        None, gt=0, description="A fixed hedging delay in seconds instead of the percentile."
    )
    balancer: str = Field(
        "p2c", description="p2c (Finagle, Linkerd), round-robin, least-in-flight or hash."
    )
    consecutive_failures: int = Field(
        5, ge=1, description="Failures in a row that eject an instance (Envoy: 5)."
    )
    base_ejection: float = Field(
        30.0, gt=0, description="First ejection, multiplied by the ejection count (Envoy: 30 s)."
    )
    max_ejection: float = Field(300.0, gt=0, description="Longest ejection (Envoy: 300 s).")
    success_rate_interval: float = Field(
        10.0, gt=0, description="Seconds between success-rate judgements (Envoy: 10 s)."
    )
    success_rate_min_requests: int = Field(
        100,
        ge=1,
        description="Requests an instance needs in an interval to be judged (Envoy: 100).",
    )
    success_rate_min_hosts: int = Field(
        5, ge=1, description="Instances that must qualify for any judgement (Envoy: 5)."
    )
    success_rate_stdev_factor: float = Field(
        1.9, gt=0, description="Ejected below mean - factor * stdev of success rates (Envoy: 1.9)."
    )
    max_ejected_share: float = Field(
        0.1, ge=0, le=1, description="Share of a cell's instances ejected at most (Envoy: 10%)."
    )


class Policies:
    """The process's call policies: a default, per target cell, per operation of a cell."""

    def __init__(
        self,
        default: CallPolicy | None = None,
        cells: dict[str, CallPolicy] | None = None,
        operations: dict[tuple[str, str], CallPolicy] | None = None,
    ) -> None:
        self.default = default or CallPolicy()
        self.cells = cells or {}
        self.operations = operations or {}

    def for_cell(self, cell: str) -> CallPolicy:
        return self.cells.get(cell, self.default)

    def for_operation(self, cell: str, operation: str) -> CallPolicy:
        return self.operations.get((cell, operation)) or self.for_cell(cell)


def policies_from_file(file: ConfigFile) -> Policies:
    """``[mesh]``, ``[mesh.cells.NAME]`` and ``[mesh.cells.NAME.operations.OP]`` tables.

    The environment overrides ``[mesh]`` (process defaults); a cell's or an operation's own
    table overrides both, being more specific.
    """
    section = dict(file.section("mesh"))
    cells_table = section.pop("cells", {})
    default = load_settings(CallPolicy, file=section, where=file.where("mesh"))
    cells: dict[str, CallPolicy] = {}
    operations: dict[tuple[str, str], CallPolicy] = {}
    for cell, table in dict(cells_table).items():
        table = dict(table)
        ops = table.pop("operations", {})
        cells[cell] = _over(default, table, file.where(f"mesh.cells.{cell}"))
        for op, op_table in dict(ops).items():
            where = file.where(f"mesh.cells.{cell}.operations.{op}")
            operations[(cell, op)] = _over(cells[cell], dict(op_table), where)
    return Policies(default, cells, operations)


def _over(base: CallPolicy, table: dict[str, Any], where: str) -> CallPolicy:
    unknown = set(table) - set(CallPolicy.model_fields)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; the keys are "
            f"{', '.join(CallPolicy.model_fields)}"
        )
    try:
        return CallPolicy.model_validate({**base.model_dump(), **table})
    except ValidationError as exc:
        problems = [
            f"{where} {err['loc'][0] if err['loc'] else '?'}: {err['msg']} "
            f"(got {err.get('input')!r})"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigurationError("; ".join(problems)) from exc
