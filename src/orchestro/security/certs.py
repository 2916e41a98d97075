"""A cell's identity material: its private key, its certificate chain and the CA bundle.

:func:`issue_leaf` makes the certificate of one cell (ECDSA P-256, the SPIFFE ID as its only
URI SAN, the DNS SAN ``<cell>.cell.<trust-domain>``, backdated a few minutes against clock
skew); :func:`load_identity` reads one an external issuer wrote. Either way the result is a
:class:`CellIdentity`, which knows when it should be renewed (at 70% of its life).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .spiffe import IdentityError, cell_dns_name, cell_spiffe_id, parse_cell_id

__all__ = [
    "BACKDATE",
    "LEAF_LIFETIME",
    "RENEW_AT",
    "CellIdentity",
    "issue_leaf",
    "load_identity",
    "read_certificates",
    "spiffe_ids",
    "write_file",
]

LEAF_LIFETIME: Final = dt.timedelta(hours=24)
# Not-before is set this far in the past so that a peer whose clock is a little behind
# accepts a certificate issued a moment ago.
BACKDATE: Final = dt.timedelta(minutes=5)
RENEW_AT: Final = 0.7  # share of a certificate's life after which it is renewed


@dataclass(frozen=True, slots=True, eq=False)
class CellIdentity:
    """One cell's key, certificate chain (leaf first) and the CA bundle to verify peers."""

    cell: str
    trust_domain: str
    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    bundle: tuple[x509.Certificate, ...]

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/cell/{self.cell}"

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_before(self) -> dt.datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def renew_at(self) -> dt.datetime:
        """When to replace this certificate: after 70% of its validity."""
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def chain_pem(self) -> bytes:
        return _pem(self.chain)

    def bundle_pem(self) -> bytes:
        return _pem(self.bundle)

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        """Write ``cert.pem``, ``key.pem`` (mode 0600) and ``bundle.pem`` into ``directory``,
        each replaced atomically; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key, bundle = directory / "cert.pem", directory / "key.pem", directory / "bundle.pem"
        write_file(key, self.key_pem(), private=True)
        write_file(cert, self.chain_pem())
        write_file(bundle, self.bundle_pem())
        return cert, key, bundle


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def issue_leaf(
    *,
    cell: str,
    trust_domain: str,
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    bundle: Sequence[x509.Certificate],
    now: dt.datetime,
    lifetime: dt.timedelta = LEAF_LIFETIME,
    backdate: dt.timedelta = BACKDATE,
) -> CellIdentity:
    """A new key and certificate for ``cell``, signed by ``ca_cert``/``ca_key``."""
    spiffe_id = cell_spiffe_id(trust_domain, cell)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - backdate
    not_after = now + lifetime
    if not_after > ca_cert.not_valid_after_utc:
        not_after = ca_cert.not_valid_after_utc  # a leaf cannot outlive its issuer
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orchestro"),
                    x509.NameAttribute(NameOID.COMMON_NAME, cell),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(spiffe_id),
                    x509.DNSName(cell_dns_name(trust_domain, cell)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CellIdentity(cell, trust_domain, key, (cert,), tuple(bundle))


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    """The ``spiffe://`` URI SANs of ``cert`` (a valid cell certificate has exactly one)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("spiffe://")
    ]


def read_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every PEM certificate in ``path``; one readable error naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(
            f"{what} file {path}: cannot read it ({exc.strerror}); check the path and its "
            "permissions"
        ) from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise IdentityError(
            f"{what} file {path}: not a PEM certificate ({exc}); it must hold "
            "'-----BEGIN CERTIFICATE-----' blocks"
        ) from exc
    return certs


def _read_key(path: Path) -> PrivateKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(
            f"key file {path}: cannot read it ({exc.strerror}); check the path and its permissions"
        ) from exc
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(
            f"key file {path}: not an unencrypted PEM private key ({exc}); write the key "
            "without a passphrase"
        ) from exc


def load_identity(
    cert_file: Path,
    key_file: Path,
    bundle_file: Path | None,
    *,
    trust_domain: str,
    cell: str | None = None,
) -> CellIdentity:
    """The identity in files an external issuer wrote (cert-manager, SPIRE's helper, Vault).

    ``cert_file`` holds the leaf first, then any intermediates; ``bundle_file`` the roots to
    trust (default: the chain's last certificate). The leaf must carry one SPIFFE ID of
    ``trust_domain`` naming a cell (``cell``, when given), and ``key_file`` its key.
    """
    chain = read_certificates(cert_file)
    if not chain:
        raise IdentityError(f"certificate file {cert_file}: holds no certificate")
    key = _read_key(key_file)
    if _public_bytes(key.public_key()) != _public_bytes(chain[0].public_key()):
        raise IdentityError(
            f"key file {key_file} does not belong to the certificate in {cert_file}: write "
            "both from the same issuance"
        )
    ids = spiffe_ids(chain[0])
    if len(ids) != 1:
        raise IdentityError(
            f"certificate file {cert_file}: the certificate has {len(ids)} SPIFFE IDs "
            f"({', '.join(ids) or 'no URI SAN'}); a cell's has exactly one, "
            f"spiffe://{trust_domain}/cell/<name>"
        )
    try:
        name = parse_cell_id(ids[0], trust_domain)
    except IdentityError as exc:
        raise IdentityError(f"certificate file {cert_file}: {exc}") from None
    if cell is not None and name != cell:
        raise IdentityError(
            f"certificate file {cert_file} is the identity of cell {name!r}, not {cell!r}: "
            "point this cell at its own certificate"
        )
    if bundle_file is not None:
        bundle = read_certificates(bundle_file, "CA bundle")
        if not bundle:
            raise IdentityError(f"CA bundle file {bundle_file}: holds no certificate")
    elif len(chain) > 1:
        bundle = chain[-1:]
    else:
        raise IdentityError(
            f"certificate file {cert_file} holds the leaf only: set bundle_file to the CA "
            "bundle its peers are verified against"
        )
    return CellIdentity(name, trust_domain, key, tuple(chain), tuple(bundle))


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (a reader sees the old or the new file);
    mode 0600 when ``private``, else 0644."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
