"""Settings: one pydantic model per concern.

Values come from, each later one winning: the ``@cell`` decorator's arguments, the
configuration file (``orchestro.toml``, or ``[tool.orchestro]`` in ``pyproject.toml``),
``ORCHESTRO_*`` environment variables, then command-line flags (which the CLI derives from
these models, so an option is declared once, here).

```toml
# orchestro.toml
[gateway]
max_body_size = "2MiB"

[registry]
registry = "etcd://10.0.0.10:2379"

[mesh]                        # the process's default call policy
timeout = 5

[mesh.cells.payments]         # calls to one cell
max_attempts = 1

[mesh.cells.orders.operations.get]   # calls to one service of a cell
hedge = true
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import ByteSize, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigurationError

__all__ = [
    "AuthSettings",
    "ConfigFile",
    "GatewaySettings",
    "RegistrySettings",
    "RunSettings",
    "TelemetrySettings",
    "error_text",
    "find_config_file",
    "load_settings",
]

S = TypeVar("S", bound=BaseSettings)


def error_text(err: Mapping[str, Any]) -> str:
    """One pydantic error as a person reads it: its message without pydantic's "Value
    error, " prefix (our validators' messages are whole sentences), and what was given."""
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{message} (got {err.get('input')!r})"


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
    # Ingress limits: what a slow or hostile client may hold (docs/concepts/edge.md).
    header_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers, from its "
        "first byte (or from connecting); then 408 and close (Apache mod_reqtimeout's "
        "header=20).",
    )
    body_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a client has to send a request's body, plus one second per "
        "min_body_rate bytes received; then 408 and close (Apache mod_reqtimeout's body=20).",
    )
    min_body_rate: int = Field(
        default=500,
        ge=1,
        description="Bytes per second that extend body_timeout (Apache mod_reqtimeout's "
        "MinRate=500).",
    )
    keepalive_timeout: float = Field(
        default=75.0,
        gt=0,
        description="Seconds an idle keep-alive connection stays open (nginx's "
        "keepalive_timeout; longer than the mesh client's 15 s pool idle time).",
    )
    max_header_size: ByteSize = Field(
        default=ByteSize(32 * 1024),
        ge=1024,
        description="Largest request line plus headers, in bytes; larger gets 431 (nginx's "
        "large_client_header_buffers 4 8k). One line is at most 8190 bytes (aiohttp's).",
    )
    max_header_count: int = Field(
        default=100,
        ge=1,
        description="Most header fields in a request; more gets 431 (Envoy's max_headers_count).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Open connections a cell's listener keeps; one more is answered 503 and "
        "closed. Default: 90% of the process's open-file limit.",
    )
    max_tls_handshakes: int = Field(
        default=256,
        ge=1,
        description="TLS handshakes the mesh listener runs at once; a connection beyond "
        "them is closed at once (each handshake holds a read buffer; none counts as a "
        "connection until it is done). HAProxy's maxsslconn is the same kind of bound.",
    )
    rate_limit_keys: int = Field(
        default=100_000,
        ge=1,
        description="Callers each rate limit remembers at most (idle ones are dropped first).",
    )


_ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class AuthSettings(BaseSettings):
    """How a cell checks the bearer tokens of ``auth="jwt"`` / ``auth="api-key"`` services
    (the ``[auth]`` section)."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    jwks: str | None = Field(
        default=None,
        description="The JSON Web Key Set tokens are verified against: a file path, or an "
        "https:// (or http:// on loopback) URL fetched and cached.",
    )
    jwt_issuer: str | None = Field(
        default=None, description="The 'iss' every token must carry (required for jwt)."
    )
    jwt_audience: str | None = Field(
        default=None, description="The 'aud' every token must include (required for jwt)."
    )
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default=["RS256", "ES256"],
        description="Signature algorithms accepted, e.g. RS256,ES256 (asymmetric only: no "
        "'none', no HS*).",
    )
    jwt_leeway: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="Seconds of clock skew allowed on exp, nbf and iat.",
    )
    jwks_refresh: float = Field(
        default=300.0,
        ge=1,
        description="Seconds a fetched JWKS is used before it is fetched again (Envoy's "
        "remote_jwks cache_duration); an unknown kid fetches it sooner, at most every 10 s.",
    )
    api_keys: str | None = Field(
        default=None,
        description="API keys as name=key or name=sha256:<hex>, comma-separated (prefer "
        "api_keys_file).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A file of API keys, one 'name = key' or 'name = sha256:<hex>' a line.",
    )

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg not in _ASYMMETRIC]
        if bad or not value:
            raise ValueError(
                f"{', '.join(bad) or 'no algorithm'}: accepted algorithms are "
                f"{', '.join(sorted(_ASYMMETRIC))} ('none' and HS* are refused: a JWKS of public "
                "keys cannot check them)"
            )
        return value


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


class TelemetrySettings(BaseSettings):
    """What each cell measures and logs (exporters are set by the standard ``OTEL_*``
    variables: see the observability concepts page)."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    metrics: bool = Field(
        default=True,
        description="Measure requests and calls, trace them, and serve /metrics and "
        "/prometheus/sd.",
    )
    access_log: bool = Field(
        default=True,
        description="Write one log line per service request (logger orchestro.access).",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Log lines as JSON, as readable text, or 'auto': text on a terminal, "
        "JSON otherwise.",
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


class ConfigFile:
    """The configuration file's sections, and where they came from (for error messages)."""

    def __init__(self, sections: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self.sections = sections or {}
        self.path = path
        # Messages name a table as the file spells it: [tool.orchestro.gateway] in pyproject.
        self._prefix = (
            "tool.orchestro." if path is not None and path.name == "pyproject.toml" else ""
        )

    @classmethod
    def load(cls, path: Path | None = None) -> ConfigFile:
        """Read ``path``, or find ``orchestro.toml`` / ``pyproject.toml`` in the current
        directory; an absent file is an empty configuration."""
        found = path if path is not None else find_config_file(Path.cwd())
        if found is None:
            return cls()
        try:
            with found.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigurationError(f"configuration file {found} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{found}: not valid TOML ({exc}); fix the file") from exc
        if found.name == "pyproject.toml":
            data = data.get("tool", {}).get("orchestro", {})
        unknown = set(data) - _SECTIONS
        if unknown:
            prefix = "tool.orchestro." if found.name == "pyproject.toml" else ""
            raise ConfigurationError(
                f"{found}: unknown section(s) {', '.join(prefix + u for u in sorted(unknown))}; "
                f"the sections are {', '.join(prefix + k for k in sorted(_SECTIONS))}"
            )
        return cls(data, found)

    def section(self, name: str) -> dict[str, Any]:
        value = self.sections.get(name, {})
        if not isinstance(value, dict):
            raise ConfigurationError(f"{self.path}: [{self._prefix}{name}] must be a table")
        return value

    def where(self, section: str) -> str:
        table = f"[{self._prefix}{section}]"
        return f"{self.path}: {table}" if self.path else table


_SECTIONS: Final = frozenset(
    {"auth", "gateway", "registry", "run", "mesh", "telemetry", "scaling", "security"}
)


def find_config_file(directory: Path) -> Path | None:
    """``orchestro.toml`` in ``directory``, else its ``pyproject.toml`` if it has a
    ``[tool.orchestro]`` table."""
    own = directory / "orchestro.toml"
    if own.is_file():
        return own
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            with pyproject.open("rb") as handle:
                if "orchestro" in tomllib.load(handle).get("tool", {}):
                    return pyproject
        except (OSError, tomllib.TOMLDecodeError):
            return None
    return None


def load_settings(
    model: type[S],
    flags: dict[str, Any] | None = None,
    file: dict[str, Any] | None = None,
    where: str = "",
) -> S:
    """Build ``model`` from the file's values, the environment and ``flags`` (each later one
    winning); explain a bad value in one line naming where it came from."""
    prefix = model.model_config.get("env_prefix", "")
    environ = {key.upper() for key in os.environ}
    values = dict(file or {})
    unknown = set(values) - set(model.model_fields)
    if unknown and where:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; the keys are "
            f"{', '.join(model.model_fields)}"
        )
    for name in model.model_fields:
        if f"{prefix}{name}".upper() in environ:
            values.pop(name, None)  # the environment wins over the file
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            env = f"{prefix}{field}".upper()
            # Name the one source the bad value came from: a command-line flag exists only
            # for the settings a command derives flags from.
            if flags and flags.get(field) is not None:
                place = f"--{field.replace('_', '-')}"
            elif env in environ:
                place = env
            elif file and field in file and field in values and where:
                place = f"{where} {field}"
            else:
                place = field
            problems.append(f"{place}: {error_text(err)}")
        raise ConfigurationError("; ".join(problems)) from exc
