"""The diagnosis of ``certs show``, on a fake clock."""

from __future__ import annotations

import datetime as dt

from orchestro.security.ca import DevelopmentCA
from orchestro.security.certs import issue_leaf
from orchestro.security.verify import check_chain, check_identity, check_validity, span
from tests.security.pki import make_ca

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_backdating_covers_a_verifier_whose_clock_is_minutes_behind(ca: DevelopmentCA) -> None:
    leaf = ca.issue("vault", now=NOW).leaf
    assert check_validity(leaf, NOW - dt.timedelta(minutes=4)).ok
    late = check_validity(leaf, NOW - dt.timedelta(minutes=6))
    assert not late.ok
    assert late.text.startswith("certificate not yet valid: valid from 2026-06-01 11:55:00 UTC")


def test_validity_says_when_to_renew_and_when_it_expired(ca: DevelopmentCA) -> None:
    leaf = ca.issue("vault", now=NOW).leaf
    fresh = check_validity(leaf, NOW)
    assert fresh.ok
    assert "expires in 1d00h" in fresh.text
    assert "renew after 2026-06-02 04:46:30 UTC" in fresh.text
    assert "renew it now" in check_validity(leaf, NOW + dt.timedelta(hours=20)).text
    expired = check_validity(leaf, NOW + dt.timedelta(hours=25))
    assert not expired.ok
    assert expired.text.startswith("certificate expired at 2026-06-02 12:00:00 UTC, 1h00m ago")


def test_a_chain_through_an_intermediate_verifies_to_its_root() -> None:
    root = make_ca("root CA")
    intermediate = make_ca("issuer CA", issuer=root)
    now = dt.datetime.now(dt.UTC)
    identity = issue_leaf(
        cell="vault",
        trust_domain="orchestro.local",
        ca_cert=intermediate[0],
        ca_key=intermediate[1],
        bundle=(root[0],),
        now=now,
    )
    chain = (identity.leaf, intermediate[0])
    assert (
        check_chain(chain, [root[0]], now).text == "verifies against the bundle (root CN=root CA)"
    )
    missing = check_chain(chain[:1], [root[0]], now)
    assert not missing.ok
    assert missing.text.startswith("unknown issuer: CN=issuer CA is not in the bundle")


def test_identity_checks_name_the_cell(ca: DevelopmentCA) -> None:
    leaf = ca.issue("vault", now=NOW).leaf
    assert check_identity(leaf, "orchestro.local").ok
    assert check_identity(leaf, "orchestro.local", "teller").text == (
        "spiffe://orchestro.local/cell/vault is cell 'vault', not 'teller'"
    )


def test_a_ca_recreated_under_the_same_name_is_explained(
    ca: DevelopmentCA, other_ca: DevelopmentCA
) -> None:
    leaf = other_ca.issue("vault", now=NOW).leaf
    check = check_chain([leaf], [ca.cert], NOW)
    assert not check.ok
    assert "did not sign this certificate (the CA was re-created?)" in check.text


def test_spans_read_at_the_precision_that_matters() -> None:
    assert span(dt.timedelta(days=3, hours=4)) == "3d04h"
    assert span(dt.timedelta(hours=5, minutes=7)) == "5h07m"
    assert span(dt.timedelta(minutes=12, seconds=5)) == "12m"
    assert span(dt.timedelta(seconds=40)) == "40s"
