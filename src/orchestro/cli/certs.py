"""``orchestro certs init|issue|show``: run the development CA by hand, and diagnose.

```console
$ python -m orchestro certs init
$ python -m orchestro certs issue vault --out certs/vault
$ python -m orchestro certs show certs/vault/cert.pem
identity: spiffe://orchestro.local/cell/vault (cell 'vault')
issuer:   CN=orchestro development CA (orchestro.local),O=orchestro
validity: valid until 2026-12-02 21:19:45 UTC (expires in 23h59m; renew after ...)
chain:    verifies against certs/vault/bundle.pem (root CN=orchestro development CA ...)
```

``show`` exits 1 when a check fails (each failing line says why and what to do); a file that
cannot be read is one error line and exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from ..errors import OrchestroError
from ..security.ca import DevelopmentCA
from ..security.certs import read_certificates
from ..security.settings import SecuritySettings
from ..security.verify import check_chain, check_identity, check_validity, describe_name
from ..state import state_dir
from .options import add_settings_flags, settings_flags

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "certs",
        help="manage the development CA and diagnose cell certificates",
        description="Create the development CA, issue cell certificates from it, and explain "
        "whether a certificate verifies (and why not).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init", help="create the development CA (if there is none) and show it"
    )
    add_settings_flags(init, SecuritySettings, only=("trust_domain",))
    init.set_defaults(handler=init_command)

    issue = commands.add_parser("issue", help="issue a cell's certificate from the development CA")
    issue.add_argument("cell", metavar="CELL", help="the cell's name")
    issue.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="write cert.pem, key.pem and bundle.pem here "
                       "(default: ./certs/CELL)")  # fmt: skip
    add_settings_flags(issue, SecuritySettings, only=("trust_domain", "leaf_lifetime"))
    issue.set_defaults(handler=issue_command)

    show = commands.add_parser(
        "show", help="who a certificate is, who signed it, when it expires, whether it verifies"
    )
    show.add_argument("cert", type=Path, nargs="?", default=None, metavar="CERT",
                      help="PEM certificate chain, leaf first "
                      "(default: show the development CA)")  # fmt: skip
    show.add_argument("--bundle", type=Path, default=None, metavar="FILE",
                      help="CA bundle to verify against (default: --bundle-file, else the "
                      "development CA)")  # fmt: skip
    show.add_argument("--cell", default=None, help="the cell the certificate should name")
    add_settings_flags(show, SecuritySettings, only=("trust_domain", "bundle_file"))
    show.set_defaults(handler=show_command)


def _settings(args: argparse.Namespace) -> SecuritySettings:
    from ..config import ConfigFile, load_settings

    file = ConfigFile.load(None)  # ./orchestro.toml or [tool.orchestro] in ./pyproject.toml
    return load_settings(
        SecuritySettings,
        settings_flags(args, SecuritySettings),
        file.section("security"),
        file.where("security"),
    )


def _ca_directory() -> Path:
    return state_dir() / "ca"


def init_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    directory = _ca_directory()
    existed = (directory / "ca.pem").exists()
    ca = DevelopmentCA.load_or_create(directory, trust_domain=settings.trust_domain)
    print(f"development CA {'exists' if existed else 'created'}: {ca.cert_file}")
    _print_ca(ca)
    return 0


def _print_ca(ca: DevelopmentCA) -> None:
    fingerprint = ca.cert.fingerprint(hashes.SHA256()).hex(":")
    print(f"trust domain: {ca.trust_domain}")
    print(f"subject:      {describe_name(ca.cert.subject)}")
    print(f"validity:     {check_validity(ca.cert, _now()).text}")
    print(f"sha256:       {fingerprint}")


def issue_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ca = DevelopmentCA.load_or_create(_ca_directory(), trust_domain=settings.trust_domain)
    identity = ca.issue(args.cell, lifetime=dt.timedelta(seconds=settings.leaf_lifetime))
    out: Path = args.out if args.out is not None else Path("certs") / args.cell
    try:
        cert, key, bundle = identity.write(out)
    except OSError as exc:
        raise OrchestroError(
            f"{out}: cannot write the certificate there ({exc.strerror}); choose another --out"
        ) from exc
    print(f"issued {identity.spiffe_id}, valid until {identity.not_after:%Y-%m-%d %H:%M:%S} UTC")
    print(f"certificate: {cert}")
    print(f"key:         {key} (mode 0600)")
    print(f"bundle:      {bundle}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = _now()
    if args.cert is None:
        directory = _ca_directory()
        if not (directory / "ca.pem").exists():
            raise OrchestroError(
                f"no development CA in {directory}: create it with `orchestro certs init`, or "
                "name a certificate: `orchestro certs show CERT`"
            )
        ca = DevelopmentCA.load(directory)
        print(f"development CA: {ca.cert_file}")
        _print_ca(ca)
        return 0
    chain = read_certificates(args.cert)
    if not chain:
        raise OrchestroError(f"certificate file {args.cert}: holds no certificate; fix the file")
    bundle_file: Path | None = args.bundle or settings.bundle_file
    if bundle_file is None:
        default = _ca_directory() / "ca.pem"
        bundle_file = default if default.exists() else None
    leaf = chain[0]
    checks = [
        ("identity", check_identity(leaf, settings.trust_domain, args.cell)),
        ("validity", check_validity(leaf, now)),
    ]
    print(f"identity: {_mark(checks[0][1])}")
    print(f"issuer:   {describe_name(leaf.issuer)}")
    print(f"validity: {_mark(checks[1][1])}")
    if bundle_file is None:
        print("chain:    not checked: no bundle (pass --bundle FILE)")
    else:
        bundle = read_certificates(bundle_file, "CA bundle")
        chain_check = check_chain(chain, bundle, now, bundle_name=str(bundle_file))
        checks.append(("chain", chain_check))
        print(f"chain:    {_mark(chain_check)}")
    return 0 if all(check.ok for _, check in checks) else 1


def _mark(check: Any) -> str:
    return check.text if check.ok else f"FAILED: {check.text}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
