from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from orchestro.security.ca import DevelopmentCA
from orchestro.security.certs import load_identity
from orchestro.security.spiffe import IdentityError, cell_spiffe_id, parse_cell_id

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_a_cell_certificate_carries_its_spiffe_id_and_dns_name(ca: DevelopmentCA) -> None:
    identity = ca.issue("vault", now=NOW)
    san = identity.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://orchestro.local/cell/vault"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["vault.cell.orchestro.local"]
    assert identity.spiffe_id == "spiffe://orchestro.local/cell/vault"
    basic = identity.leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    identity.leaf.verify_directly_issued_by(ca.cert)


def test_keys_are_ecdsa_p256(ca: DevelopmentCA) -> None:
    identity = ca.issue("vault", now=NOW)
    assert isinstance(identity.key, ec.EllipticCurvePrivateKey)
    assert isinstance(identity.key.curve, ec.SECP256R1)
    assert isinstance(ca.key.curve, ec.SECP256R1)


def test_leaves_live_24_hours_backdated_5_minutes_and_renew_at_70_percent(
    ca: DevelopmentCA,
) -> None:
    identity = ca.issue("vault", now=NOW)
    assert identity.not_before == NOW - dt.timedelta(minutes=5)
    assert identity.not_after == NOW + dt.timedelta(hours=24)
    life = identity.not_after - identity.not_before
    assert identity.renew_at == identity.not_before + life * 0.7


def test_a_leaf_never_outlives_its_ca(ca: DevelopmentCA) -> None:
    late = ca.cert.not_valid_after_utc - dt.timedelta(hours=1)
    identity = ca.issue("vault", now=late)
    assert identity.not_after == ca.cert.not_valid_after_utc


def test_written_identity_keeps_its_key_private(ca: DevelopmentCA, tmp_path: Path) -> None:
    cert, key, bundle = ca.issue("vault").write(tmp_path / "vault")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = load_identity(cert, key, bundle, trust_domain="orchestro.local", cell="vault")
    assert loaded.cell == "vault"
    assert loaded.bundle[0] == ca.cert


def test_files_of_another_cell_or_trust_domain_are_refused(
    ca: DevelopmentCA, tmp_path: Path
) -> None:
    cert, key, bundle = ca.issue("vault").write(tmp_path / "vault")
    with pytest.raises(IdentityError, match="identity of cell 'vault', not 'teller'"):
        load_identity(cert, key, bundle, trust_domain="orchestro.local", cell="teller")
    with pytest.raises(IdentityError, match="another trust domain"):
        load_identity(cert, key, bundle, trust_domain="prod.example.com")


def test_a_key_of_another_certificate_is_refused(ca: DevelopmentCA, tmp_path: Path) -> None:
    cert, _, bundle = ca.issue("vault").write(tmp_path / "a")
    _, other_key, _ = ca.issue("vault").write(tmp_path / "b")
    with pytest.raises(IdentityError, match="does not belong to the certificate"):
        load_identity(cert, other_key, bundle, trust_domain="orchestro.local")


def test_spiffe_ids_parse_only_cells_of_the_trust_domain() -> None:
    assert cell_spiffe_id("orchestro.local", "vault") == "spiffe://orchestro.local/cell/vault"
    assert parse_cell_id("spiffe://orchestro.local/cell/vault", "orchestro.local") == "vault"
    with pytest.raises(IdentityError, match="another trust domain"):
        parse_cell_id("spiffe://evil.org/cell/vault", "orchestro.local")
    with pytest.raises(IdentityError, match="does not name a cell"):
        parse_cell_id("spiffe://orchestro.local/ns/default/sa/vault", "orchestro.local")
    with pytest.raises(IdentityError, match="not a SPIFFE ID"):
        parse_cell_id("https://orchestro.local/cell/vault", "orchestro.local")
    with pytest.raises(IdentityError, match="trust domain"):
        cell_spiffe_id("Bad_Domain!", "vault")
