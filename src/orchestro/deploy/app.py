"""What the generators read: the cells of a target, each with its scaling, the cells it calls
and the settings it runs with, checked once so that every generator can trust it.

```python
app = App.from_specs("shop", "examples/shop.py", [spec_of(c) for c in cells], DeployOptions())
[c.name for c in app.cells]          # ['inventory', 'payments', 'orders', 'storefront']
app.cell("orders").calls             # ('inventory', 'payments')
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..cell.scaling import Scaling
from ..cell.spec import CELL_ATTR, CellSpec
from ..config import GatewaySettings
from ..errors import ConfigurationError
from ..mesh import clients_of
from ..security import spiffe

__all__ = [
    "App",
    "CellModel",
    "DeployOptions",
    "app_name",
    "check_dns_label",
    "check_image",
    "check_options",
    "container_target",
]

# DNS-1123 label: what Kubernetes accepts as a namespace and most object names.
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The reference grammar of the OCI distribution spec (docker/distribution `reference`).
_IMAGE: Final = re.compile(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)
DEFAULT_PORT: Final = 8080
# A Kubernetes resource quantity, as requests and limits take it.
_QUANTITY: Final = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
# The longest suffix a cell's name gets in an object name ("-peers").
_SUFFIX: Final = 6


class DeployOptions(BaseModel):
    """Everything a generator takes besides the cells; the CLI's flags fill it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str | None = Field(default=None, description="Image of the app (default APP:VERSION).")
    namespace: str = Field(default="default", description="Namespace of the objects.")
    autoscaler: Literal["hpa", "keda", "none"] = Field(
        default="hpa", description="Autoscaler of the cells with Scaling max > min."
    )
    registry: str = Field(
        default="dns",
        description="Discovery in the cluster: 'dns' (the headless Services) or an etcd:// URL.",
    )
    certs: Literal["none", "secret", "cert-manager"] = Field(
        default="none",
        description="Cell identities: none (none mounted), a Secret NAME-identity "
        "per cell mounted for ORCHESTRO_CERT_FILE/KEY_FILE/BUNDLE_FILE, or that Secret written "
        "by a cert-manager Certificate with the cell's SPIFFE ID.",
    )
    trust_domain: str = Field(
        default=spiffe.DEFAULT_TRUST_DOMAIN,
        description="SPIFFE trust domain of the cells' identities.",
    )
    issuer: str = Field(
        default="orchestro-ca",
        description="cert-manager Issuer of the cells (a ClusterIssuer: --cluster-issuer).",
    )
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    monitoring: Literal["annotations", "prometheus-operator"] = Field(
        default="annotations",
        description="How Prometheus finds /metrics: prometheus.io/* pod annotations, or a "
        "PodMonitor per cell.",
    )
    prometheus_url: str = Field(
        default="http://prometheus.monitoring.svc:9090",
        pattern=r"^https?://",
        description="Prometheus KEDA's triggers query.",
    )
    monitoring_namespace: str = Field(
        default="monitoring", description="Namespace whose pods may scrape internal cells."
    )
    pre_stop_seconds: int = Field(
        default=5, ge=1, le=60, description="Seconds a pod keeps serving after it is removed."
    )
    grace_margin_seconds: int = Field(
        default=5, ge=1, le=60, description="Seconds of the grace period beyond the drain."
    )
    cpu_request: str = Field(default="100m", pattern=_QUANTITY, description="CPU request.")
    memory_request: str = Field(default="128Mi", pattern=_QUANTITY, description="Memory request.")
    memory_limit: str = Field(default="256Mi", pattern=_QUANTITY, description="Memory limit.")
    user_id: int = Field(default=10001, ge=1, description="Numeric user and group of the pods.")
    python: str = Field(default="3.12", description="Python of the image (python:X-slim).")

    @field_validator("python")
    @classmethod
    def _supported_python(cls, value: str) -> str:
        match = re.fullmatch(r"3\.([0-9]+)", value)
        if match is None or int(match.group(1)) < 11:
            raise ValueError(f"{value}: orchestro needs Python 3.11 or newer (e.g. 3.12)")
        return value


# The mesh listener's port in a pod (see CellModel.mesh_port).
MESH_PORT = 9443


@dataclass(frozen=True, slots=True)
class CellModel:
    spec: CellSpec
    scaling: Scaling
    calls: tuple[str, ...]  # cells of the mesh this cell calls, by name
    call_ports: dict[str, int]  # their ports, where the client names a @cell class
    urls: tuple[str, ...]  # http(s) URLs it calls outside the mesh
    callers: tuple[str, ...]  # cells of this app that call it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        """The gateway's port: the cell's own, or 8080 for a cell that picks a free one
        (``port=0``), which no Service could point at."""
        return self.spec.port or DEFAULT_PORT

    def command(self, target: str) -> list[str]:
        """The container's command: ``run`` in exec form, this cell only."""
        command = ["python", "-m", "orchestro", "run", target, "--cell", self.name]
        if not self.spec.port:
            command += ["--port", str(DEFAULT_PORT)]
        return command

    @property
    def public(self) -> bool:
        """Whether any of its services answers anyone (not ``internal=True``)."""
        return any(not op.service.internal for op in self.spec.operations)

    @property
    def allow(self) -> tuple[str, ...] | None:
        """Who may call its internal services: the ``allow=`` list of ``@cell``, else
        ``None``, meaning "the cells of the app that call it" (the derived policy)."""
        declared: Sequence[str] | None = self.spec.allow
        return tuple(declared) if declared is not None else None

    @property
    def mesh_callers(self) -> tuple[str, ...]:
        """The cells whose pods may reach its mesh port: its ``allow`` list (else the app's
        cells that call it) and every cell a service's own ``allow`` names."""
        names = set(self.allow if self.allow is not None else self.callers)
        for op in self.spec.operations:
            if op.service.internal and op.service.allow is not None:
                names.update(op.service.allow)
        return tuple(sorted(names - {self.name}))

    @property
    def internal(self) -> bool:
        """Whether it has internal services (served on its mesh port only)."""
        return any(op.service.internal for op in self.spec.operations)

    @property
    def mesh_port(self) -> int:
        """The mesh listener's port in the pod: fixed, so that a Service, a NetworkPolicy
        and a container port can name it (9443, or 9444 when the gateway has 9443)."""
        return MESH_PORT if self.port != MESH_PORT else MESH_PORT + 1


@dataclass(frozen=True, slots=True)
class App:
    name: str
    target: str  # as the container runs it: a module or a path relative to the context
    cells: tuple[CellModel, ...]
    options: DeployOptions
    drain_timeout: float

    @property
    def image(self) -> str:
        return self.options.image or f"{self.name}:{self.cells[0].spec.version}"

    def stop_grace(self, pre_stop: int = 0) -> int:
        """Seconds a stopping container gets before SIGKILL: ``pre_stop`` (Kubernetes' preStop
        sleep), the whole drain timeout rounded up, and the margin, so a kill never cuts a
        drain short. One formula for every format."""
        return pre_stop + math.ceil(self.drain_timeout) + self.options.grace_margin_seconds

    def cell(self, name: str) -> CellModel:
        for model in self.cells:
            if model.name == name:
                return model
        raise KeyError(name)

    @classmethod
    def from_specs(
        cls,
        name: str,
        target: str,
        specs: Sequence[CellSpec],
        options: DeployOptions,
        scalings: dict[str, Scaling] | None = None,
        gateway: GatewaySettings | None = None,
    ) -> App:
        """The app ``name`` of the cells ``specs``, which the container runs as ``target``;
        ``scalings`` (by cell name) replace the cells' own, as the configuration file does."""
        check_options(options)
        check_dns_label("app name (from TARGET)", name)
        calls = {spec.name: _calls_of(spec.cls) for spec in specs}
        cells = []
        for spec in specs:
            check_dns_label(f"cell name {spec.name!r}", spec.name, reserve=_SUFFIX)
            cells.append(
                CellModel(
                    spec=spec,
                    scaling=(scalings or {}).get(spec.name, spec.scaling),
                    calls=tuple(calls[spec.name][0]),
                    call_ports={k: v for k, v in calls[spec.name][0].items() if v is not None},
                    urls=calls[spec.name][1],
                    callers=tuple(n for n in calls if spec.name in calls[n][0]),
                )
            )
        drain = (gateway or GatewaySettings()).drain_timeout
        return cls(name, target, tuple(cells), options, drain)


def check_options(options: DeployOptions) -> None:
    if options.image is not None:
        check_image(options.image)
    check_dns_label("--namespace", options.namespace)
    check_dns_label("--monitoring-namespace", options.monitoring_namespace)
    check_trust_domain(options.trust_domain)
    if options.registry != "dns" and not options.registry.startswith("etcd://"):
        raise ConfigurationError(
            f"--registry {options.registry!r}: use dns (the headless Services) or "
            "etcd://host:2379[,host:2379]"
        )


def check_trust_domain(value: str) -> None:
    try:
        spiffe.check_trust_domain(value)
    except spiffe.IdentityError as exc:
        raise ConfigurationError(f"--trust-domain {value!r}: {exc}") from None


def check_image(image: str) -> None:
    """Refuse what no registry accepts, in one line naming the flag."""
    if not _IMAGE.fullmatch(image) or len(image) > 255:
        raise ConfigurationError(
            f"--image {image!r} is not an image reference: write [REGISTRY/]NAME[:TAG][@DIGEST] "
            "with a lowercase name, e.g. registry.example.com/shop:1.0.0"
        )


def check_dns_label(what: str, value: str, *, reserve: int = 0) -> None:
    limit = 63 - reserve
    if not _DNS_LABEL.fullmatch(value) or len(value) > limit:
        raise ConfigurationError(
            f"{what} {value!r} is not a DNS-1123 label: use at most {limit} lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )


def _calls_of(cls: type[Any]) -> tuple[dict[str, int | None], tuple[str, ...]]:
    """The cells (name → port when known) and URLs that ``cls``'s ``mesh.client(...)``
    attributes call."""
    cells: dict[str, int | None] = {}
    urls: dict[str, None] = {}
    for target in clients_of(cls).values():
        if isinstance(target, type) and isinstance(target.__dict__.get(CELL_ATTR), CellSpec):
            callee: CellSpec = target.__dict__[CELL_ATTR]
            cells[callee.name] = callee.port
        elif isinstance(target, str) and target.startswith(("http://", "https://")):
            urls[target] = None
        elif isinstance(target, str):
            cells.setdefault(target, None)
    return cells, tuple(urls)


def app_name(target: str) -> str:
    """The app's name, from the target's module: ``examples/shop.py`` → ``shop``."""
    module = target.partition(":")[0]
    stem = Path(module).stem if module.endswith(".py") else module.rsplit(".", 1)[-1]
    return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "app"


def container_target(target: str) -> str:
    """``target`` as the container runs it from its working directory (the build context)."""
    module, sep, attr = target.partition(":")
    if not (module.endswith(".py") or "/" in module):
        return target
    path = Path(module)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            raise ConfigurationError(
                f"TARGET {module!r} is outside the current directory, which is the image's "
                "build context: run deploy from a directory that contains it"
            ) from None
    return str(PurePosixPath(*path.parts)) + sep + attr
