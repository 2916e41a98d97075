"""Diagnosis of a certificate chain, one readable sentence per question.

``python -m orchestro certs show`` asks, of a cell's certificate: who am I (its SPIFFE ID),
who signed me, when do I expire, and does my chain verify against this bundle — and, when
not, why: expired, not yet valid, wrong trust domain, unknown issuer, missing URI SAN. The
TLS handshake answers the same questions with far less to say ("certificate verify failed");
these checks exist to explain its refusals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from .certs import spiffe_ids
from .spiffe import IdentityError, parse_cell_id

__all__ = ["Check", "check_chain", "check_identity", "check_validity", "describe_name", "span"]


@dataclass(frozen=True, slots=True)
class Check:
    """The answer to one question: ``ok``, and a sentence saying what was found."""

    ok: bool
    text: str


def describe_name(name: x509.Name) -> str:
    """A distinguished name as ``CN=..., O=...``."""
    return name.rfc4514_string() or "(empty name)"


def span(delta: dt.timedelta) -> str:
    """``3d04h``, ``5h07m``, ``12m``, ``40s``: a duration at the precision that matters."""
    seconds = int(abs(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_identity(cert: x509.Certificate, trust_domain: str, cell: str | None = None) -> Check:
    """Whether ``cert`` names one cell of ``trust_domain`` (``cell``, when given)."""
    ids = spiffe_ids(cert)
    if not ids:
        return Check(
            False,
            "missing URI SAN: the certificate has no SPIFFE ID; a cell's certificate carries "
            f"spiffe://{trust_domain}/cell/<name> (issue one with `orchestro certs issue`)",
        )
    if len(ids) > 1:
        return Check(False, f"{len(ids)} SPIFFE IDs ({', '.join(ids)}); a cell's has one")
    domain = ids[0].removeprefix("spiffe://").partition("/")[0]
    if domain != trust_domain:
        return Check(
            False,
            f"wrong trust domain: {ids[0]} is from {domain!r}, not {trust_domain!r} (set "
            f"ORCHESTRO_TRUST_DOMAIN={domain} if that is this deployment's)",
        )
    try:
        name = parse_cell_id(ids[0], trust_domain)
    except IdentityError as exc:
        return Check(False, str(exc))
    if cell is not None and name != cell:
        return Check(False, f"{ids[0]} is cell {name!r}, not {cell!r}")
    return Check(True, f"{ids[0]} (cell {name!r})")


def check_validity(cert: x509.Certificate, now: dt.datetime, what: str = "certificate") -> Check:
    """Whether ``cert`` is valid at ``now``, and for how long."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return Check(
            False,
            f"{what} not yet valid: valid from {_when(start)}, in {span(start - now)} (is this "
            "machine's clock behind?)",
        )
    if now >= end:
        return Check(
            False,
            f"{what} expired at {_when(end)}, {span(now - end)} ago: issue a new one "
            "(`orchestro certs issue`, or check that its issuer renews it)",
        )
    renew = start + (end - start) * 0.7
    note = f"renew after {_when(renew)}" if now < renew else "past 70% of its life: renew it now"
    return Check(True, f"valid until {_when(end)} (expires in {span(end - now)}; {note})")


def check_chain(
    chain: Sequence[x509.Certificate],
    bundle: Sequence[x509.Certificate],
    now: dt.datetime,
    *,
    bundle_name: str = "the bundle",
) -> Check:
    """Whether ``chain`` (leaf first, then intermediates) leads to a root in ``bundle``, every
    certificate on the way valid at ``now``."""
    roots = {root.fingerprint(hashes.SHA256()): root for root in bundle}
    current = chain[0]
    pool = list(chain[1:]) + list(bundle)
    path: list[x509.Certificate] = []
    for _ in range(8):
        if current.fingerprint(hashes.SHA256()) in roots and path:
            break
        issuer, mismatch = _find_issuer(current, pool)
        if issuer is None:
            who = describe_name(current.issuer)
            if mismatch:
                return Check(
                    False,
                    f"unknown issuer: {who} is in {bundle_name} but did not sign this "
                    "certificate (the CA was re-created?): issue a new certificate from the "
                    "current CA, or add the old root to the bundle",
                )
            return Check(
                False,
                f"unknown issuer: {who} is not in {bundle_name} (the certificate comes from "
                "another CA): add that CA's root to the bundle, or use a certificate it signed",
            )
        path.append(issuer)
        if issuer.fingerprint(hashes.SHA256()) in roots:
            break
        current = issuer
    else:
        return Check(False, "the chain is longer than 8 certificates")
    for cert in [chain[0], *path]:
        validity = check_validity(cert, now, f"{describe_name(cert.subject)}:")
        if not validity.ok:
            return Check(False, f"chain does not verify: {validity.text}")
    root = path[-1]
    return Check(True, f"verifies against {bundle_name} (root {describe_name(root.subject)})")


def _find_issuer(
    cert: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[x509.Certificate | None, bool]:
    mismatch = False
    for candidate in pool:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError):
            mismatch = True
            continue
        return candidate, False
    return None, mismatch
