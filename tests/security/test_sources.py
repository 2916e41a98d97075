"""Identity sources: renewal at 70% on a fake clock, files rewritten by an external issuer."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from orchestro.security.boundary import CellSecurity
from orchestro.security.ca import DevelopmentCA
from orchestro.security.settings import SecuritySettings
from orchestro.security.sources import DevelopmentSource, FileSource, keep_fresh, open_identity
from orchestro.security.tls import CellTLS

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(hours=24)


def test_the_development_source_renews_at_70_percent_of_the_life(ca: DevelopmentCA) -> None:
    source = DevelopmentSource(ca, "vault", lifetime=DAY, now=NOW)
    first = source.current
    assert source.refresh(first.renew_at - dt.timedelta(seconds=1)) is None
    renewed = source.refresh(first.renew_at)
    assert renewed is not None
    assert renewed is source.current
    assert renewed.leaf.serial_number != first.leaf.serial_number
    assert renewed.not_after == first.renew_at + DAY


def test_open_identity_uses_the_development_ca_without_setup(state: Path) -> None:
    source = open_identity("vault", SecuritySettings(), now=NOW)
    assert source.current.spiffe_id == "spiffe://orchestro.local/cell/vault"
    assert (state / "ca" / "ca.pem").exists()


def test_open_identity_reads_the_configured_files(ca: DevelopmentCA, tmp_path: Path) -> None:
    cert, key, bundle = ca.issue("vault").write(tmp_path)
    settings = SecuritySettings(cert_file=cert, key_file=key, bundle_file=bundle)
    source = open_identity("vault", settings)
    assert isinstance(source, FileSource)
    assert source.current.cell == "vault"


def test_rewritten_files_are_reloaded_and_a_half_written_pair_is_not(
    ca: DevelopmentCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key, bundle = ca.issue("vault").write(tmp_path)
    source = FileSource(cert, key, bundle, trust_domain="orchestro.local", cell="vault")
    first = source.current
    assert source.refresh(NOW) is None  # nothing changed: a stat, no read

    renewed = ca.issue("vault")
    cert.write_bytes(renewed.chain_pem())  # the certificate first, its key not yet
    with caplog.at_level(logging.WARNING, "orchestro.security"):
        assert source.refresh(NOW) is None
    assert source.current is first
    assert "keeping the current identity" in caplog.text

    renewed.write(tmp_path)
    reloaded = source.refresh(NOW)
    assert reloaded is not None
    assert reloaded.leaf == renewed.leaf


def test_an_issuer_that_stopped_renewing_is_warned_about_once(
    ca: DevelopmentCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key, bundle = ca.issue("vault").write(tmp_path)
    source = FileSource(cert, key, bundle, trust_domain="orchestro.local")
    late = source.current.renew_at
    with caplog.at_level(logging.WARNING, "orchestro.security"):
        source.refresh(late)
        source.refresh(late)
    assert caplog.text.count("is its issuer renewing it?") == 1


async def test_keep_fresh_loads_each_renewal_into_the_contexts(ca: DevelopmentCA) -> None:
    source = DevelopmentSource(ca, "vault", lifetime=DAY, now=NOW)
    tls = CellTLS(source.current)
    times = iter([NOW, source.current.renew_at])
    sleeps = 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps > 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await keep_fresh(tls, source, interval=5.0, clock=lambda: next(times), sleep=sleep)
    assert tls.identity is source.current
    assert tls.identity.not_before > NOW


def test_a_cell_security_opens_with_no_setup(state: Path) -> None:
    security = CellSecurity.open("vault", SecuritySettings(), now=NOW)
    assert security.tls.identity.spiffe_id == "spiffe://orchestro.local/cell/vault"
    assert security.resolver.trust_domain == "orchestro.local"
    assert security.tls.server_name("teller") == "teller.cell.orchestro.local"


def test_settings_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file are set together"):
        SecuritySettings(cert_file=Path("c.pem"))
    with pytest.raises(ValueError, match="public_cert_file and public_key_file"):
        SecuritySettings(public_key_file=Path("k.pem"))
    with pytest.raises(ValueError, match="not valid"):
        SecuritySettings(trust_domain="Not A Domain")
