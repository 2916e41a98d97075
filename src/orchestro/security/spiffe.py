"""SPIFFE IDs of cells: ``spiffe://<trust-domain>/cell/<name>``.

A cell's identity is a SPIFFE ID (the SPIFFE ID standard: a ``spiffe`` URI whose host is the
trust domain and whose path names the workload). Its certificate carries that ID as its only
URI SAN, plus the DNS SAN ``<name>.cell.<trust-domain>`` so that an ordinary TLS client can
check the server's name with hostname verification.

```python
>>> cell_spiffe_id("orchestro.local", "vault")
'spiffe://orchestro.local/cell/vault'
>>> parse_cell_id("spiffe://orchestro.local/cell/vault", "orchestro.local")
'vault'
```
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import IdentityError

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "IdentityError",
    "cell_dns_name",
    "cell_spiffe_id",
    "check_trust_domain",
    "parse_cell_id",
]

DEFAULT_TRUST_DOMAIN: Final = "orchestro.local"

# SPIFFE ID standard, section 2.1: a trust domain is lowercase letters, digits, '.', '-', '_'.
_TRUST_DOMAIN: Final = re.compile(r"[a-z0-9._-]{1,255}")
# A cell name is a DNS label (see @cell); the same rule makes the DNS SAN valid.
_CELL_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_trust_domain(trust_domain: str) -> str:
    """``trust_domain`` if it is a valid SPIFFE trust domain name, else :class:`IdentityError`."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain) or trust_domain.strip(".") != trust_domain:
        raise IdentityError(
            f"trust domain {trust_domain!r} is not valid: use lowercase letters, digits, "
            "'.', '-' and '_', e.g. 'orchestro.local' or 'prod.example.com'"
        )
    return trust_domain


def cell_spiffe_id(trust_domain: str, cell: str) -> str:
    """The SPIFFE ID of ``cell`` in ``trust_domain``."""
    if not _CELL_NAME.fullmatch(cell):
        raise IdentityError(f"{cell!r} is not a cell name (1-63 lowercase letters, digits, '-')")
    return f"spiffe://{check_trust_domain(trust_domain)}/cell/{cell}"


def cell_dns_name(trust_domain: str, cell: str) -> str:
    """The DNS SAN of ``cell``'s certificate: ``<cell>.cell.<trust-domain>``."""
    cell_spiffe_id(trust_domain, cell)  # validates both
    return f"{cell}.cell.{trust_domain}"


def parse_cell_id(uri: str, trust_domain: str | None) -> str:
    """The cell named by the SPIFFE ID ``uri``; raises :class:`IdentityError` naming what is
    wrong when it is not ``spiffe://<trust_domain>/cell/<name>`` (any trust domain when
    ``trust_domain`` is ``None``)."""
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise IdentityError(f"{uri!r} is not a SPIFFE ID (it must start with spiffe://)")
    domain, _, path = uri[len(prefix) :].partition("/")
    if trust_domain is not None and domain != trust_domain:
        raise IdentityError(
            f"{uri} is from trust domain {domain!r}, not {trust_domain!r}: the peer belongs to "
            "another trust domain"
        )
    if not _TRUST_DOMAIN.fullmatch(domain):
        raise IdentityError(f"{uri!r}: {domain!r} is not a valid trust domain")
    kind, _, name = path.partition("/")
    if kind != "cell" or not _CELL_NAME.fullmatch(name):
        raise IdentityError(f"{uri} does not name a cell (expected spiffe://{domain}/cell/<name>)")
    return name
