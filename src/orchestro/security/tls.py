"""TLS contexts of a cell's mesh traffic, rotated in place, and the peer identity they prove.

:class:`CellTLS` owns two :class:`ssl.SSLContext` objects for the life of a process:
``server`` for the mesh listener (a client certificate from the bundle is required) and
``client`` for the mesh's outgoing calls (the cell's certificate is presented and the server's
name, ``<cell>.cell.<trust-domain>``, checked). :meth:`CellTLS.update` loads a renewed
certificate into the *same* objects: connections made afterwards use it, connections already
open keep theirs, and nothing restarts.

```python
tls = CellTLS(identity)
server = await loop.create_server(handler, host, port, ssl=tls.server)   # mesh listener
resolver = PeerIdentity(tls.trust_domain)                                # its IdentityResolver
await session.get(url, ssl=tls.client, server_hostname=tls.server_name("vault"))
```
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import weakref
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import HTTPError
from .certs import CellIdentity
from .identity import ANONYMOUS, Caller
from .spiffe import IdentityError, cell_dns_name, parse_cell_id

__all__ = ["CellTLS", "PeerIdentity", "identity_from_transport", "peer_caller", "peer_spiffe_id"]

_log = logging.getLogger("orchestro.security")


class CellTLS:
    """The mesh listener's and the mesh client's TLS contexts for one cell's identity."""

    def __init__(self, identity: CellIdentity) -> None:
        self.trust_domain = identity.trust_domain
        self.cell = identity.cell
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        for context in (self.server, self.client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._roots: set[bytes] = set()
        self.identity = identity
        self._load(identity)

    def server_name(self, cell: str) -> str:
        """The name to verify a server of ``cell`` by (``server_hostname`` of a connection)."""
        return cell_dns_name(self.trust_domain, cell)

    def update(self, identity: CellIdentity) -> None:
        """Use ``identity`` for every connection made from now on (a renewed certificate, or
        new roots in the bundle); open connections are not touched."""
        if identity.trust_domain != self.trust_domain or identity.cell != self.cell:
            raise IdentityError(
                f"a renewed identity must be {self.identity.spiffe_id}, not {identity.spiffe_id}"
            )
        self._load(identity)
        self.identity = identity
        _log.info(
            "identity %s renewed: valid until %s",
            identity.spiffe_id,
            identity.not_after.isoformat(),
        )

    def _load(self, identity: CellIdentity) -> None:
        # ssl loads a chain from files only: write it once, with the key encrypted by a
        # throw-away password, so the key never lies on disk in the clear.
        password = os.urandom(16).hex().encode()
        fd, path = tempfile.mkstemp(prefix="orchestro-identity-", suffix=".pem")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(identity.chain_pem() + identity.key_pem(password))
            for context in (self.server, self.client):
                context.load_cert_chain(path, password=password)
        finally:
            os.unlink(path)
        # Roots are only ever added: during a rotation the bundle holds old and new roots,
        # and a context's store cannot drop one (a removed root stays trusted until restart).
        for root in identity.bundle:
            fingerprint = root.fingerprint(hashes.SHA256())
            if fingerprint not in self._roots:
                pem = root.public_bytes(Encoding.PEM).decode()
                for context in (self.server, self.client):
                    context.load_verify_locations(cadata=pem)
                self._roots.add(fingerprint)


def peer_spiffe_id(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The single SPIFFE ID of a verified peer certificate, ``None`` when the peer sent no
    certificate; :class:`IdentityError` when it has none or several."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    names: Any = cert.get("subjectAltName", ())
    uris = [str(value) for kind, value in names if kind == "URI"]
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        listed = ", ".join(uris) or "none"
        raise IdentityError(
            f"the peer's certificate has {len(uris)} URI SANs ({listed}); a cell's "
            "certificate has exactly one SPIFFE ID"
        )
    return uris[0]


def peer_caller(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str) -> Caller:
    """The cell a verified TLS connection's peer proved to be (anonymous without a client
    certificate); :class:`IdentityError` for a certificate of another trust domain."""
    spiffe_id = peer_spiffe_id(ssl_object)
    if spiffe_id is None:
        return ANONYMOUS
    return Caller(parse_cell_id(spiffe_id, trust_domain))


def identity_from_transport(transport: Any, trust_domain: str) -> Caller:
    """The caller proven by an asyncio transport's TLS connection (anonymous if plain)."""
    if transport is None:
        return ANONYMOUS
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ANONYMOUS
    return peer_caller(ssl_object, trust_domain)


class PeerIdentity:
    """The :data:`~orchestro.security.identity.IdentityResolver` of a mesh listener: the
    caller is the cell its client certificate names, read once per connection.

    A certificate of another trust domain (which the CA bundle let through) is answered with
    403 naming why.
    """

    def __init__(self, trust_domain: str) -> None:
        self.trust_domain = trust_domain
        # Keyed by the connection's SSL object, so an entry lives as long as the connection.
        self._by_connection: weakref.WeakKeyDictionary[Any, Caller | str] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, request: web.BaseRequest) -> Caller:
        transport = request.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return ANONYMOUS
        known = self._by_connection.get(ssl_object)
        if known is None:
            try:
                known = peer_caller(ssl_object, self.trust_domain)
            except IdentityError as exc:
                known = str(exc)
            self._by_connection[ssl_object] = known
        if isinstance(known, str):
            raise HTTPError(403, known)
        return known
