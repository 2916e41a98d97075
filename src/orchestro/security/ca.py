"""The development CA: zero-setup identities on one machine.

The first orchestro process that needs an identity creates a CA in the state directory
(``<state>/ca/ca.pem`` and ``ca.key``, mode 0600) and every later process on the machine uses
it. Creation is race-safe across processes: the pair is written into a private temporary
directory which is then renamed to ``ca/`` — a rename onto an existing, non-empty directory
fails, so the first rename wins and every other process loads the winner's CA.

```python
ca = DevelopmentCA.load_or_create(trust_domain="orchestro.local")
identity = ca.issue("vault", now=datetime.now(UTC))
```

It is a development convenience, not a production CA: anyone who can read the state
directory can mint any cell's identity. In production, certificates come from files (see
:mod:`orchestro.security.sources`).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..state import state_dir
from .certs import BACKDATE, LEAF_LIFETIME, CellIdentity, issue_leaf, read_certificates, write_file
from .spiffe import IdentityError, check_trust_domain

__all__ = ["CA_LIFETIME", "DevelopmentCA"]

CA_LIFETIME: Final = dt.timedelta(days=3650)


@dataclass(frozen=True, slots=True, eq=False)
class DevelopmentCA:
    """A self-signed root that signs cell certificates of one trust domain."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def trust_domain(self) -> str:
        """The trust domain the CA was created for (its own SPIFFE ID, as SPIRE's CAs carry)."""
        san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
        return uri.removeprefix("spiffe://")

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.pem"

    def issue(
        self,
        cell: str,
        *,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = LEAF_LIFETIME,
        backdate: dt.timedelta = BACKDATE,
    ) -> CellIdentity:
        """A new identity for ``cell`` (a fresh key and a certificate signed by this CA)."""
        return issue_leaf(
            cell=cell,
            trust_domain=self.trust_domain,
            ca_cert=self.cert,
            ca_key=self.key,
            bundle=(self.cert,),
            now=now or dt.datetime.now(dt.UTC),
            lifetime=lifetime,
            backdate=backdate,
        )

    @classmethod
    def load_or_create(
        cls,
        directory: Path | None = None,
        *,
        trust_domain: str,
        now: dt.datetime | None = None,
    ) -> DevelopmentCA:
        """The CA in ``directory`` (default ``<state>/ca``), created when there is none.

        Raises :class:`~orchestro.security.spiffe.IdentityError` when the existing CA was made
        for another trust domain, or its files are damaged or readable by others.
        """
        check_trust_domain(trust_domain)
        directory = directory if directory is not None else state_dir() / "ca"
        if not (directory / "ca.pem").exists():
            cls._create(directory, trust_domain, now or dt.datetime.now(dt.UTC))
        ca = cls.load(directory)
        if ca.trust_domain != trust_domain:
            raise IdentityError(
                f"the development CA in {directory} is for trust domain {ca.trust_domain!r}, "
                f"not {trust_domain!r}: set ORCHESTRO_TRUST_DOMAIN={ca.trust_domain}, or "
                f"remove {directory} to start a new CA (every cell then needs a new certificate)"
            )
        return ca

    @classmethod
    def load(cls, directory: Path) -> DevelopmentCA:
        """The CA already in ``directory``."""
        cert_file, key_file = directory / "ca.pem", directory / "ca.key"
        certs = read_certificates(cert_file, "CA certificate")
        if len(certs) != 1:
            raise IdentityError(f"CA certificate file {cert_file}: expected one certificate")
        try:
            mode = key_file.stat().st_mode
            data = key_file.read_bytes()
        except OSError as exc:
            raise IdentityError(
                f"CA key file {key_file}: cannot read it ({exc.strerror}); remove {directory} "
                "to start a new development CA"
            ) from exc
        if mode & 0o077:
            raise IdentityError(
                f"CA key file {key_file} is readable by other users (mode {mode & 0o777:o}): "
                f"run chmod 600 {key_file}"
            )
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"CA key file {key_file}: not an EC private key")
        return cls(directory, certs[0], key)

    @staticmethod
    def _create(directory: Path, trust_domain: str, now: dt.datetime) -> None:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ca-", dir=directory.parent))  # mode 0700
        try:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _root_certificate(key, trust_domain, now)
            write_file(staging / "ca.key", key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ), private=True)  # fmt: skip
            write_file(staging / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
            try:
                os.rename(staging, directory)
            except OSError as exc:
                # Another process's CA is in place first: use theirs.
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise IdentityError(
                        f"development CA {directory}: cannot create it ({exc.strerror}); "
                        "set ORCHESTRO_STATE_DIR to a writable directory"
                    ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _root_certificate(
    key: ec.EllipticCurvePrivateKey, trust_domain: str, now: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orchestro"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"orchestro development CA ({trust_domain})"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
