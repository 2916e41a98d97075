"""TLS contexts of a cell's mesh traffic, rotated in place, and the peer identity they prove.

:class:`CellTLS` owns two :class:`ssl.SSLContext` objects: ``server`` for the mesh listener
(a client certificate from the bundle is required) and ``client`` for the mesh's outgoing
calls (the cell's certificate is presented and the server's name,
``<cell>.cell.<trust-domain>``, checked). :meth:`CellTLS.update` applies a renewed
certificate or a changed CA bundle to every connection made afterwards — connections already
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import HTTPError
from .certs import CellIdentity
from .identity import ANONYMOUS, Caller
from .spiffe import IdentityError, cell_dns_name, parse_cell_id

__all__ = [
    "CellTLS",
    "PeerIdentity",
    "expect_peer",
    "identity_from_transport",
    "peer_caller",
    "peer_spiffe_id",
]

_log = logging.getLogger("orchestro.security")


class CellTLS:
    """The mesh listener's and the mesh client's TLS contexts for one cell's identity.

    ``server`` is the listener's context for the life of the process; each handshake's SNI
    callback (called with or without SNI) hands the connection the context of the current
    identity, so a renewal, a new root or a removed root applies to the next connection
    while open ones keep theirs. ``client`` is updated in place (kept-alive connections stay
    in the pool) unless a root was removed: then it is a new context, so that no connection
    verified by that root is reused — read ``tls.client`` on every request.
    """

    def __init__(self, identity: CellIdentity) -> None:
        self.trust_domain = identity.trust_domain
        self.cell = identity.cell
        self.identity = identity
        self.server = _server_context(identity)
        self.server.sni_callback = self._select
        self._current_server = self.server
        self.client = _client_context(identity)
        self._roots = _fingerprints(identity)
        self.handshakes = 0  # TLS handshakes the mesh listener started (its SNI callback's)

    def server_name(self, cell: str) -> str:
        """The name to verify a server of ``cell`` by (``server_hostname`` of a connection)."""
        return cell_dns_name(self.trust_domain, cell)

    def update(self, identity: CellIdentity) -> None:
        """Use ``identity`` for every connection made from now on (a renewed certificate, a
        changed bundle); open connections are not touched."""
        if identity.trust_domain != self.trust_domain or identity.cell != self.cell:
            raise IdentityError(
                f"a renewed identity must be {self.identity.spiffe_id}, not {identity.spiffe_id}"
            )
        server = _server_context(identity)
        roots = _fingerprints(identity)
        if roots >= self._roots:
            _load_chain(identity, self.client)
            for root in identity.bundle:
                if root.fingerprint(hashes.SHA256()) not in self._roots:
                    self.client.load_verify_locations(cadata=_pem(root))
        else:
            self.client = _client_context(identity)
        self._current_server = server
        self._roots = roots
        self.identity = identity
        _log.info(
            "identity %s renewed: valid until %s",
            identity.spiffe_id,
            identity.not_after.isoformat(),
        )

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        self.handshakes += 1
        current = self._current_server
        if current is not context:
            ssl_object.context = current


def _fingerprints(identity: CellIdentity) -> frozenset[bytes]:
    return frozenset(root.fingerprint(hashes.SHA256()) for root in identity.bundle)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def _server_context(identity: CellIdentity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    # No session resumption: a resumed session verifies no certificate, so a client whose
    # root was removed from the bundle, or whose certificate expired, would still pass as
    # its cell for the ticket's life (2 h) — and the tickets are sealed with the listener's
    # first context, which no rotation replaces. The mesh client never resumes anyway (each
    # pooled connection is kept alive instead), so this costs no handshake.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    return _configure(context, identity)


def _client_context(identity: CellIdentity) -> ssl.SSLContext:
    return _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), identity)  # verifies the name


def _configure(context: ssl.SSLContext, identity: CellIdentity) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(identity, context)
    context.load_verify_locations(cadata="".join(_pem(root) for root in identity.bundle))
    return context


def _load_chain(identity: CellIdentity, context: ssl.SSLContext) -> None:
    # ssl loads a chain from files only: write it, with the key encrypted by a throw-away
    # password so that the key never lies on disk in the clear, and remove it at once.
    password = os.urandom(16).hex().encode()
    fd, path = tempfile.mkstemp(prefix="orchestro-identity-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.chain_pem() + identity.key_pem(password))
        context.load_cert_chain(path, password=password)
    finally:
        os.unlink(path)


def expect_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str, cell: str) -> None:
    """Check that a verified server is ``cell`` by its SPIFFE ID (the handshake checked its
    DNS name already); :class:`IdentityError` naming what it is instead."""
    caller = peer_caller(ssl_object, trust_domain)
    if caller.cell != cell:
        raise IdentityError(f"the server is {caller}, not cell {cell!r}")


def peer_spiffe_id(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The single SPIFFE ID of a verified peer certificate, ``None`` when the peer sent no
    certificate; :class:`IdentityError` when it has none or several."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    if ssl_object.session_reused:
        # The certificate is the one of the session's first handshake, not verified again:
        # its root may have left the bundle since, or it may have expired. The listener
        # issues no TLS 1.3 tickets, but a TLS 1.2 client can still resume by session ID.
        raise IdentityError(
            "the peer resumed a TLS session, which proves no certificate now; the mesh "
            "listener needs a full handshake: connect without resuming the session"
        )
    _refuse_ca(ssl_object.getpeercert(binary_form=True))
    names: Any = cert.get("subjectAltName", ())
    uris = [str(value) for kind, value in names if kind == "URI"]
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        listed = ", ".join(uris) or "none"
        raise IdentityError(
            f"the peer's certificate has {len(uris)} URI SANs ({listed}); a cell's "
            "certificate has exactly one SPIFFE ID"
        )
    return uris[0]


def _refuse_ca(der: bytes | None) -> None:
    # OpenSSL accepts a CA certificate as the peer's own: an intermediate (or any CA:TRUE
    # certificate the trust domain's CA signed) carrying a cell's URI SAN would pass as that
    # cell. An X509-SVID leaf has CA false (X509-SVID section 4.1), so a CA is no caller.
    if der is None:
        return
    try:
        constraints = (
            x509.load_der_x509_certificate(der)
            .extensions.get_extension_for_class(x509.BasicConstraints)
            .value
        )
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise IdentityError(
            "the peer's certificate is a CA certificate (basicConstraints CA:TRUE); a cell's "
            "certificate is a leaf: issue it with CA:FALSE"
        )


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
