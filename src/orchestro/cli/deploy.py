"""``orchestro deploy k8s|docker|compose TARGET -o DIR``: deployment files generated from the
cells of TARGET (``run``'s syntax), their ``Scaling`` and the configuration file.

A bad flag value (image reference, namespace, registry) or target is one line naming it, exit 2.
Files are written whole and the command prints each path, so its output can be committed and
diffed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..cell.scaling import scalings_from_config
from ..cell.spec import spec_of
from ..config import ConfigFile, GatewaySettings, error_text, load_settings
from ..deploy import App, DeployOptions, compose, dockerfile, dockerignore, manifests
from ..deploy.app import app_name, check_options, container_target
from ..errors import ConfigurationError
from .importer import load_cells
from .options import add_settings_flags, settings_flags

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
    k8s.add_argument("--cell", dest="cells", action="append", default=[], metavar="NAME",
                     help="only this cell (repeatable)")  # fmt: skip
    k8s.add_argument("--cluster-issuer", action="store_true",
                     help="--issuer names a ClusterIssuer")  # fmt: skip
    add_settings_flags(k8s, DeployOptions, exclude=_EXPLICIT, env=False)
    k8s.set_defaults(handler=deploy, format="k8s")
    docker = kinds.add_parser("docker", help="a multi-stage Dockerfile and .dockerignore")
    _common(docker)
    docker.add_argument("--image", default=None, help=argparse.SUPPRESS)
    add_settings_flags(docker, DeployOptions, only=("python", "user_id"), env=False)
    docker.set_defaults(handler=deploy, format="docker", cells=[])
    comp = kinds.add_parser("compose", help="compose.yaml: one service per cell, one host")
    _common(comp)
    comp.add_argument("--image", default=None, help="image reference (default APP:VERSION)")
    comp.set_defaults(handler=deploy, format="compose", cells=[])


# DeployOptions fields whose flag differs per format (--image) or is not a value of its own
# (--cluster-issuer sets issuer_kind; --python is the Dockerfile's).
_EXPLICIT = frozenset({"image", "issuer_kind", "python"})


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="pkg.module[:CellClass] or path.py")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="directory to write into (created if missing)")  # fmt: skip
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="configuration file (default: ./orchestro.toml)")  # fmt: skip


def deploy(args: argparse.Namespace) -> int:
    # The defaults are DeployOptions' own: a flag only overrides them.
    given = settings_flags(args, DeployOptions)
    if getattr(args, "cluster_issuer", False):
        given["issuer_kind"] = "ClusterIssuer"
    try:
        options = DeployOptions(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "a flag"
        raise ConfigurationError(f"{flag}: {error_text(err)}") from None
    app = load_app(args.target, options, args.cells, ConfigFile.load(args.config))
    if args.format == "k8s":
        files = manifests(app)
    elif args.format == "docker":
        files = {"Dockerfile": dockerfile(app), ".dockerignore": dockerignore(app)}
    else:
        files = {"compose.yaml": compose(app)}
    write(args.output, files)
    if args.format in ("k8s", "compose"):
        for line in identity_warnings(app, compose=args.format == "compose"):
            print(f"orchestro: warning: {line}", file=sys.stderr)
    return 0


def identity_warnings(app: App, *, compose: bool) -> list[str]:
    """What cannot work across pods without cell identities: internal services called by
    other cells of the app (every caller is anonymous then, and refused)."""
    if not compose and app.options.certs != "none":
        return []
    found = []
    for cell in app.cells:
        callers = [c for c in cell.callers if c != cell.name]
        if cell.internal and callers:
            fix = (
                "compose has no cell identities: keep those cells in one process, or deploy "
                "to Kubernetes with --certs"
                if compose
                else "choose --certs cert-manager (an Issuer signs them) or --certs secret "
                "(you provide a Secret NAME-identity per cell)"
            )
            found.append(
                f"{', '.join(callers)} call{'s' if len(callers) == 1 else ''} cell "
                f"{cell.name!r}, whose internal services refuse callers without a cell "
                f"identity; {fix}"
            )
    return found


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
        scalings_from_config({x.name: x.scaling for x in specs}, file),
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
