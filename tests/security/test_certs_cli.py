"""``orchestro certs`` as a user runs it: a subprocess, a fresh state directory."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from orchestro.security.ca import DevelopmentCA
from orchestro.security.certs import issue_leaf


def certs(cwd: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRO_STATE_DIR": str(state)}
    env.pop("ORCHESTRO_TRUST_DOMAIN", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestro", "certs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path, tmp_path / "state"


def test_init_issue_show_from_a_fresh_directory(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    init = certs(cwd, state, "init")
    assert init.returncode == 0, init.stderr
    assert "development CA created" in init.stdout
    assert "trust domain: orchestro.local" in init.stdout
    assert "development CA exists" in certs(cwd, state, "init").stdout

    issue = certs(cwd, state, "issue", "vault")
    assert issue.returncode == 0, issue.stderr
    assert "issued spiffe://orchestro.local/cell/vault" in issue.stdout
    assert (cwd / "certs" / "vault" / "key.pem").stat().st_mode & 0o777 == 0o600

    show = certs(cwd, state, "show", "certs/vault/cert.pem", "--cell", "vault")
    assert show.returncode == 0, show.stdout + show.stderr
    lines = show.stdout.splitlines()
    assert lines[0] == "identity: spiffe://orchestro.local/cell/vault (cell 'vault')"
    assert lines[1].startswith("issuer:   CN=orchestro development CA (orchestro.local)")
    assert lines[2].startswith("validity: valid until ")
    assert lines[3].startswith("chain:    verifies against ")


def _write(path: Path, cert: x509.Certificate) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def test_show_diagnoses_an_expired_certificate(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    ca = DevelopmentCA.load_or_create(state / "ca", trust_domain="orchestro.local")
    old = ca.issue("vault", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    show = certs(cwd, state, "show", str(_write(cwd / "old.pem", old.leaf)))
    assert show.returncode == 1
    assert "validity: FAILED: certificate expired at " in show.stdout
    assert "ago: issue a new one" in show.stdout
    assert "chain:    FAILED: chain does not verify" in show.stdout


def test_show_diagnoses_a_certificate_not_yet_valid(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    ca = DevelopmentCA.load_or_create(state / "ca", trust_domain="orchestro.local")
    future = ca.issue("vault", now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    show = certs(cwd, state, "show", str(_write(cwd / "future.pem", future.leaf)))
    assert show.returncode == 1
    assert "not yet valid" in show.stdout
    assert "clock behind" in show.stdout


def test_show_diagnoses_a_wrong_trust_domain(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    certs(cwd, state, "issue", "vault")
    show = certs(cwd, state, "show", "certs/vault/cert.pem", "--trust-domain", "prod.example.com")
    assert show.returncode == 1
    assert show.stdout.splitlines()[0] == (
        "identity: FAILED: wrong trust domain: spiffe://orchestro.local/cell/vault is from "
        "'orchestro.local', not 'prod.example.com' (set ORCHESTRO_TRUST_DOMAIN=orchestro.local "
        "if that is this deployment's)"
    )


def test_show_diagnoses_an_unknown_issuer(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    certs(cwd, state, "init")
    foreign = DevelopmentCA.load_or_create(cwd / "foreign", trust_domain="orchestro.local")
    leaf = foreign.issue("vault").leaf
    show = certs(cwd, state, "show", str(_write(cwd / "foreign.pem", leaf)))
    assert show.returncode == 1
    # Same name as the local CA, another key: the CA was re-created.
    assert "chain:    FAILED: unknown issuer: " in show.stdout
    assert "did not sign this certificate" in show.stdout


def test_show_diagnoses_a_missing_uri_san(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    ca = DevelopmentCA.load_or_create(state / "ca", trust_domain="orchestro.local")
    identity = issue_leaf(
        cell="vault",
        trust_domain="orchestro.local",
        ca_cert=ca.cert,
        ca_key=ca.key,
        bundle=(ca.cert,),
        now=dt.datetime.now(dt.UTC),
    )
    # Re-sign the same certificate without its SAN extension.
    builder = (
        x509.CertificateBuilder()
        .subject_name(identity.leaf.subject)
        .issuer_name(ca.cert.subject)
        .public_key(identity.leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(identity.not_before)
        .not_valid_after(identity.not_after)
    )
    bare = builder.sign(ca.key, hashes.SHA256())
    show = certs(cwd, state, "show", str(_write(cwd / "bare.pem", bare)))
    assert show.returncode == 1
    assert "identity: FAILED: missing URI SAN" in show.stdout


def test_a_file_that_cannot_be_read_is_one_line_and_exit_2(fresh: tuple[Path, Path]) -> None:
    cwd, state = fresh
    show = certs(cwd, state, "show", "nowhere.pem")
    assert show.returncode == 2
    assert show.stderr.strip().splitlines() == [
        "orchestro: error: certificate file nowhere.pem: cannot read it (No such file or "
        "directory); check the path and its permissions"
    ]
    (cwd / "junk.pem").write_text("not a certificate")
    junk = certs(cwd, state, "show", "junk.pem")
    assert junk.returncode == 2
    assert len(junk.stderr.strip().splitlines()) == 1
    assert "junk.pem" in junk.stderr
