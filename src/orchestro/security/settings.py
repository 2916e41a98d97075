"""Settings of cell identities: the trust domain, leaf lifetimes, production files.

Environment variables are ``ORCHESTRO_<FIELD>`` like every other settings model; the
configuration file's section will be ``[security]``.

```toml
[security]
mesh_tls = true                      # the default; false turns identities and the mesh listener off
mesh_port = 0                        # the mesh listener's port (0: a free one)
policy = "declared"                  # or "strict" (derived from the code), "audit"
trust_domain = "prod.example.com"
cert_file = "/var/run/secrets/orchestro/tls.crt"   # written by cert-manager, SPIRE or Vault
key_file = "/var/run/secrets/orchestro/tls.key"
bundle_file = "/var/run/secrets/orchestro/ca.crt"
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .spiffe import DEFAULT_TRUST_DOMAIN, IdentityError, check_trust_domain

__all__ = ["SecuritySettings"]


class SecuritySettings(BaseSettings):
    """Who cells are and who issues their certificates."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRO_", frozen=True, extra="ignore")

    mesh_tls: bool = Field(
        default=True,
        description="Serve and call the mesh over mutual TLS with one identity per cell (the "
        "default). false: no mesh listener and no identities; internal services then answer "
        "in-process callers only.",
    )
    mesh_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the mesh listener (mutual TLS; serves internal services too); 0 "
        "picks a free one. Replicas always pick their own.",
    )
    policy: Literal["declared", "strict", "audit"] = Field(
        default="declared",
        description="Access policy: declared (allow= lists, else any cell of the trust "
        "domain), strict (also: where nothing is declared, only the callers found in the "
        "cells' code), audit (as strict, but refusals are logged and counted, not enforced).",
    )
    trust_domain: str = Field(
        default=DEFAULT_TRUST_DOMAIN,
        description="SPIFFE trust domain of this deployment's cells: their identities are "
        "spiffe://<trust_domain>/cell/<name>; peers from another trust domain are refused.",
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain of this process's cell (leaf first), written by an "
        "external issuer; watched and reloaded in place. Unset: the development CA issues one.",
    )
    key_file: Path | None = Field(
        default=None, description="PEM private key of cert_file (watched with it)."
    )
    bundle_file: Path | None = Field(
        default=None,
        description="PEM CA bundle peers are verified against (old and new roots during a "
        "rotation). Unset with cert_file set: the issuing chain's last certificate.",
    )
    public_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain the public port serves TLS with (the user's own, "
        "not a cell identity); unset: the public port is plain HTTP.",
    )
    public_key_file: Path | None = Field(
        default=None, description="PEM private key of public_cert_file."
    )
    leaf_lifetime: float = Field(
        default=24 * 3600.0,
        ge=60,
        le=365 * 24 * 3600,
        description="Seconds a certificate from the development CA is valid; it is renewed "
        "at 70% of its life.",
    )
    reload_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between checks of cert_file, key_file and bundle_file for a "
        "new version (a stat call each, no read).",
    )

    @field_validator("trust_domain")
    @classmethod
    def _valid_trust_domain(cls, value: str) -> str:
        try:
            return check_trust_domain(value)
        except IdentityError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _files_in_pairs(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file are set together (or neither)")
        if (self.public_cert_file is None) != (self.public_key_file is None):
            raise ValueError("public_cert_file and public_key_file are set together (or neither)")
        if self.bundle_file is not None and self.cert_file is None:
            raise ValueError("bundle_file needs cert_file and key_file")
        return self

    @property
    def from_files(self) -> bool:
        """Whether identities come from files an external issuer writes."""
        return self.cert_file is not None
