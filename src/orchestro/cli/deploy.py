"""``orchestro deploy k8s|docker|compose TARGET -o DIR``: deployment files generated from the
cells of TARGET (``run``'s syntax), their ``Scaling`` and the configuration file.

A bad flag value (image reference, namespace, registry) or target is one line naming it, exit 2.
Files are written whole and the command prints each path, so its output can be committed and
diffed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..cell.spec import spec_of
from ..config import ConfigFile, GatewaySettings, load_settings
from ..deploy import App, DeployOptions, compose, dockerfile, dockerignore, manifests
from ..deploy.app import app_name, check_options, container_target
from ..errors import ConfigurationError
from .importer import load_cells
from .run import cell_scalings

__all__ = ["add_parser", "deploy", "load_app"]


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="generate Kubernetes, Docker or compose files from the cells",
        description="Write deployment files for the cells of TARGET (pkg.module, "
        "pkg.module:CellClass or path/to/file.py) into DIR.",
    )
    kinds = parser.add_subparsers(title="formats", metavar="FORMAT", required=True)
    k8s = kinds.add_parser("k8s", help="Kubernetes objects: one file per cell + kustomization")
    _common(k8s)
    k8s.add_argument("--image", default=None, help="image reference (default APP:VERSION)")
    k8s.add_argument("--namespace", default=None, metavar="NS", help="namespace")
    k8s.add_argument("--cell", dest="cells", action="append", default=[], metavar="NAME",
                     help="only this cell (repeatable)")  # fmt: skip
    k8s.add_argument("--autoscaler", choices=["hpa", "keda", "none"], default=None,
                     help="autoscaler of cells with Scaling max > min (default hpa)")  # fmt: skip
    k8s.add_argument("--registry", default=None, metavar="dns|etcd://HOST:PORT",
                     help="discovery in the cluster: the headless Services' DNS (default) "
                     "or etcd")  # fmt: skip
    k8s.add_argument("--certs", choices=["none", "secret", "cert-manager"], default=None,
                     help="cell identities: none (development CA), a Secret NAME-identity per "
                     "cell, or cert-manager Certificates writing it")  # fmt: skip
    k8s.add_argument("--trust-domain", default=None, metavar="DOMAIN",
                     help="SPIFFE trust domain of the cells' identities")  # fmt: skip
    k8s.add_argument("--issuer", default=None, metavar="NAME",
                     help="cert-manager Issuer (ClusterIssuer: --cluster-issuer)")  # fmt: skip
    k8s.add_argument("--cluster-issuer", action="store_true",
                     help="--issuer names a ClusterIssuer")  # fmt: skip
    k8s.add_argument("--monitoring", choices=["annotations", "prometheus-operator"], default=None,
                     help="scrape annotations (default) or a PodMonitor per cell")  # fmt: skip
    _option_flags(k8s, exclude=_EXPLICIT)
    k8s.set_defaults(handler=deploy, format="k8s")
    docker = kinds.add_parser("docker", help="a multi-stage Dockerfile and .dockerignore")
    _common(docker)
    docker.add_argument("--image", default=None, help=argparse.SUPPRESS)
    _option_flags(docker, only=frozenset({"python", "user_id"}))
    docker.set_defaults(handler=deploy, format="docker", cells=[])
    comp = kinds.add_parser("compose", help="compose.yaml: one service per cell, one host")
    _common(comp)
    comp.add_argument("--image", default=None, help="image reference (default APP:VERSION)")
    comp.set_defaults(handler=deploy, format="compose", cells=[])


# DeployOptions fields with a hand-written flag above (choices, metavars, help of their own).
_EXPLICIT = frozenset(
    {"image", "namespace", "autoscaler", "registry", "certs", "trust_domain", "issuer",
     "issuer_kind", "monitoring", "python"}
)  # fmt: skip


def _option_flags(
    parser: argparse.ArgumentParser,
    exclude: frozenset[str] = frozenset(),
    only: frozenset[str] | None = None,
) -> None:
    """``--field-name`` for every other DeployOptions field, its default and help from the
    model (one source of truth), validated by it."""
    for name, field in DeployOptions.model_fields.items():
        if name in exclude or (only is not None and name not in only):
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description or name.replace('_', ' ')} [default: {field.default}]",
        )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="pkg.module[:CellClass] or path.py")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="directory to write into (created if missing)")  # fmt: skip
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="configuration file (default: ./orchestro.toml)")  # fmt: skip


def deploy(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name, None) for name in DeployOptions.model_fields}
    if getattr(args, "cluster_issuer", False):
        given["issuer_kind"] = "ClusterIssuer"
    # The defaults are DeployOptions' own: a flag only overrides them.
    try:
        options = DeployOptions(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "a flag"
        raise ConfigurationError(f"{flag}: {err['msg']} (got {err.get('input')!r})") from None
    app = load_app(args.target, options, args.cells, ConfigFile.load(args.config))
    if args.format == "k8s":
        files = manifests(app)
    elif args.format == "docker":
        files = {"Dockerfile": dockerfile(app), ".dockerignore": dockerignore(app)}
    else:
        files = {"compose.yaml": compose(app)}
    write(args.output, files)
    return 0


def load_app(
    target: str, options: DeployOptions, names: Sequence[str] = (), file: ConfigFile | None = None
) -> App:
    """The app of ``target`` (``run``'s syntax): its cells (only ``names``, when given) with
    the configuration file's scaling and drain timeout."""
    file = file if file is not None else ConfigFile()
    check_options(options)  # before importing the user's module: a typo fails fast
    gateway = load_settings(GatewaySettings, {}, file.section("gateway"), file.where("gateway"))
    specs = [spec_of(c) for c in load_cells(target, names)]
    return App.from_specs(
        app_name(target),
        container_target(target),
        specs,
        options,
        cell_scalings(specs, file),
        gateway,
    )


def write(directory: Path, files: dict[str, str]) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
            print(directory / name)
    except OSError as exc:
        raise ConfigurationError(f"-o {str(directory)!r}: cannot write ({exc.strerror})") from exc
