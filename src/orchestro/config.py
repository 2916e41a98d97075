"""Settings: one pydantic model per concern.

Values come from, each later one winning: the ``@cell`` decorator's arguments, ``ORCHESTRO_*``
environment variables, then command-line flags (which the CLI derives from these models, so an
option is declared once, here).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import ByteSize, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError

__all__ = ["GatewaySettings", "RegistrySettings", "RunSettings", "load_settings"]

S = TypeVar("S", bound=BaseSettings)


class GatewaySettings(BaseSettings):
    """How each cell's gateway treats requests and shutdown."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    max_body_size: ByteSize = Field(
        default=ByteSize(1024 * 1024),
        description="Largest request body accepted, e.g. 1048576 or '2MiB'; larger gets 413.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests a cell answers at once; more get 503 with Retry-After. "
        "Unlimited when unset.",
    )
    drain_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a draining cell waits for requests in flight before cancelling them.",
    )


class RunSettings(BaseSettings):
    """How ``orchestro run`` hosts its cells."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    host: str | None = Field(
        default=None, description="Address every cell listens on (default: each cell's own)."
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="Event loop: uvloop when installed ('auto'), or asyncio."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level of log records written to stderr."
    )


class RegistrySettings(BaseSettings):
    """Where cells register and find each other."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    registry: str = Field(
        default="local://",
        description="Registry URL: local://[PATH] (one SQLite file per machine), "
        "etcd://host:port[,host:port], memory:// or static://name=http://host:port,...",
    )
    registry_ttl: float = Field(
        default=5.0,
        gt=0.5,
        le=300,
        description="Seconds an instance stays registered after its process stops renewing it.",
    )
    advertise_host: str | None = Field(
        default=None,
        description="Address other machines reach this process's cells at (default: the "
        "listening host, or this machine's name when listening on all addresses).",
    )
    zone: str | None = Field(
        default=None, description="Zone label of this process's instances (for locality)."
    )


def load_settings(model: type[S], flags: dict[str, Any] | None = None) -> S:
    """Build ``model`` from the environment and ``flags``; explain a bad value in one line."""
    try:
        return model(**{k: v for k, v in (flags or {}).items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = f"--{field.replace('_', '-')} / ORCHESTRO_{field.upper()}"
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigurationError("; ".join(problems)) from exc
