"""Mutual TLS on loopback: a real aiohttp server with a cell's server context, real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from orchestro.errors import HTTPError
from orchestro.security import tls as tls_module
from orchestro.security.boundary import CellSecurity
from orchestro.security.ca import DevelopmentCA
from orchestro.security.certs import CellIdentity, issue_leaf
from orchestro.security.settings import SecuritySettings
from orchestro.security.spiffe import IdentityError
from orchestro.security.tls import CellTLS, PeerIdentity, expect_peer, identity_from_transport
from tests.security.pki import make_ca


class Server:
    def __init__(self, tls: CellTLS, runner: web.AppRunner, port: int) -> None:
        self.tls = tls
        self.runner = runner
        self.url = f"https://127.0.0.1:{port}/whoami"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[CellIdentity], Server]]:
    runners: list[web.AppRunner] = []

    async def start(identity: CellIdentity) -> Server:
        tls = CellTLS(identity)
        resolve = PeerIdentity(tls.trust_domain)

        async def whoami(request: web.Request) -> web.Response:
            try:
                caller = resolve(request)
            except HTTPError as exc:  # what the gateway's frame does with it
                return web.json_response(exc.to_problem(), status=exc.status)
            assert request.transport is not None
            return web.json_response({"cell": caller.cell, "connection": id(request.transport)})

        app = web.Application()
        app.router.add_get("/whoami", whoami)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server)
        await site.start()
        port = runner.addresses[0][1]
        return Server(tls, runner, port)

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def call(client: CellTLS | ssl.SSLContext, url: str, server_cell: str = "vault") -> dict:
    context = client.client if isinstance(client, CellTLS) else client
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url, ssl=context, server_hostname=f"{server_cell}.cell.orchestro.local"
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_the_caller_is_the_cell_its_certificate_names(
    serve, ca: DevelopmentCA, version: ssl.TLSVersion
) -> None:
    server = await serve(ca.issue("vault"))
    client = CellTLS(ca.issue("teller"))
    client.client.maximum_version = version
    assert (await call(client, server.url))["cell"] == "teller"


async def test_identity_is_read_once_per_connection(
    serve, ca: DevelopmentCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(ca.issue("vault"))
    client = CellTLS(ca.issue("teller"))
    reads = []
    real = tls_module.peer_caller
    monkeypatch.setattr(tls_module, "peer_caller", lambda *a: reads.append(1) or real(*a))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(
                server.url, ssl=client.client, server_hostname=client.server_name("vault")
            ) as response:
                assert (await response.json())["cell"] == "teller"
    assert len(reads) == 1


async def test_a_client_without_a_certificate_is_refused_at_the_handshake(
    serve, ca: DevelopmentCA
) -> None:
    server = await serve(ca.issue("vault"))
    anonymous = ssl.create_default_context(cadata=ca.cert.public_bytes(Encoding.PEM).decode())
    with pytest.raises(aiohttp.ClientError):
        await call(anonymous, server.url)


async def test_a_foreign_ca_claiming_an_allowed_cell_is_refused(
    serve, ca: DevelopmentCA, other_ca: DevelopmentCA
) -> None:
    server = await serve(ca.issue("vault"))
    impostor = CellTLS(replace(other_ca.issue("teller"), bundle=(ca.cert,)))
    with pytest.raises(aiohttp.ClientError):
        await call(impostor, server.url)


async def test_a_client_of_another_trust_domain_gets_403_naming_it(
    serve, ca: DevelopmentCA, tmp_path: Path
) -> None:
    foreign = DevelopmentCA.load_or_create(tmp_path / "foreign", trust_domain="evil.example")
    # A bundle that trusts both roots lets the handshake through: the identity check refuses.
    server = await serve(replace(ca.issue("vault"), bundle=(ca.cert, foreign.cert)))
    client = CellTLS(replace(foreign.issue("teller"), bundle=(ca.cert,)))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            server.url, ssl=client.client, server_hostname="vault.cell.orchestro.local"
        ) as response,
    ):
        assert response.status == 403
        problem = await response.json()
    assert "from trust domain 'evil.example', not 'orchestro.local'" in problem["detail"]


async def test_rotation_serves_new_connections_with_the_new_identity_and_keeps_old_ones(
    serve, ca: DevelopmentCA, other_ca: DevelopmentCA
) -> None:
    server = await serve(ca.issue("vault"))
    old_client = CellTLS(ca.issue("teller"))
    async with aiohttp.ClientSession() as old_session:

        async def old_call() -> dict:
            async with old_session.get(
                server.url, ssl=old_client.client, server_hostname="vault.cell.orchestro.local"
            ) as response:
                return await response.json()  # type: ignore[no-any-return]

        before = await old_call()
        # The root rotates: the bundle holds old and new roots, the server's leaf is new.
        both = (ca.cert, other_ca.cert)
        server.tls.update(replace(other_ca.issue("vault"), bundle=both))
        new_client = CellTLS(replace(other_ca.issue("auditor"), bundle=both))
        assert (await call(new_client, server.url))["cell"] == "auditor"
        after = await old_call()  # the kept-alive connection is untouched
        assert after == before
        # A client whose certificate is still from the old root connects while the bundle
        # holds it (its own bundle has the new root, to verify the server's new leaf).
        old_root_client = CellTLS(replace(ca.issue("shop"), bundle=both))
        assert (await call(old_root_client, server.url))["cell"] == "shop"

        # The rotation ends: the old root leaves the bundle, and is no longer trusted.
        server.tls.update(replace(other_ca.issue("vault"), bundle=(other_ca.cert,)))
        with pytest.raises(aiohttp.ClientError):
            await call(old_root_client, server.url)
        assert (await call(new_client, server.url))["cell"] == "auditor"


def test_the_client_context_is_kept_while_roots_only_grow_and_replaced_when_one_goes(
    ca: DevelopmentCA, other_ca: DevelopmentCA
) -> None:
    tls = CellTLS(ca.issue("teller"))
    client = tls.client
    tls.update(ca.issue("teller"))
    assert tls.client is client  # a renewal: pooled connections stay usable
    tls.update(replace(ca.issue("teller"), bundle=(ca.cert, other_ca.cert)))
    assert tls.client is client
    tls.update(replace(other_ca.issue("teller"), bundle=(other_ca.cert,)))
    assert tls.client is not client  # no connection verified by the removed root is reused


def test_a_renewal_must_keep_the_identity(ca: DevelopmentCA) -> None:
    tls = CellTLS(ca.issue("teller"))
    with pytest.raises(IdentityError, match=r"must be spiffe://orchestro\.local/cell/teller"):
        tls.update(ca.issue("shop"))


async def test_the_client_checks_the_servers_spiffe_id(serve, ca: DevelopmentCA) -> None:
    server = await serve(ca.issue("vault"))
    client = CellTLS(ca.issue("teller"))
    port = server.runner.addresses[0][1]
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client.client, server_hostname=client.server_name("vault")
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        expect_peer(ssl_object, "orchestro.local", "vault")
        with pytest.raises(IdentityError, match="the server is cell 'vault', not cell 'shop'"):
            expect_peer(ssl_object, "orchestro.local", "shop")
    finally:
        writer.close()
        await writer.wait_closed()
    # A server of another cell fails the handshake's name check.
    with pytest.raises(aiohttp.ClientError):
        await call(client, server.url, server_cell="shop")


def test_identity_from_a_plain_transport_is_anonymous() -> None:
    class Plain:
        def get_extra_info(self, name: str) -> None:
            return None

    assert identity_from_transport(Plain(), "orchestro.local").is_anonymous
    assert identity_from_transport(None, "orchestro.local").is_anonymous


def intermediate_issuer() -> Callable[[str], CellIdentity]:
    """Issues identities from an intermediate: the chain carries it, the bundle the root."""
    root = make_ca("root CA")
    intermediate = make_ca("issuer CA", issuer=root)

    def issue(cell: str) -> CellIdentity:
        identity = issue_leaf(
            cell=cell,
            trust_domain="orchestro.local",
            ca_cert=intermediate[0],
            ca_key=intermediate[1],
            bundle=(root[0],),
            now=dt.datetime.now(dt.UTC),
        )
        return replace(identity, chain=(identity.leaf, intermediate[0]))

    return issue


async def test_chains_through_an_intermediate_verify_both_ways(serve) -> None:
    issue = intermediate_issuer()
    server = await serve(issue("vault"))
    assert (await call(CellTLS(issue("teller")), server.url))["cell"] == "teller"


async def test_an_expired_client_certificate_is_refused_at_the_handshake(
    serve, ca: DevelopmentCA
) -> None:
    server = await serve(ca.issue("vault"))
    expired = ca.issue("teller", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    with pytest.raises(aiohttp.ClientError):
        await call(CellTLS(expired), server.url)


def _ca_certificate_naming(ca: DevelopmentCA, cell: str) -> CellIdentity:
    """What a CA's signing mistake (or an intermediate carrying a cell's URI SAN) looks like:
    a CA:TRUE certificate from the real CA with ``cell``'s SPIFFE ID."""
    leaf = ca.issue(cell)
    cert = (
        x509.CertificateBuilder()
        .subject_name(leaf.leaf.subject)
        .issuer_name(ca.cert.subject)
        .public_key(leaf.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_before)
        .not_valid_after(leaf.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            leaf.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return replace(leaf, chain=(cert,))


async def test_a_ca_certificate_naming_an_allowed_cell_is_no_caller(
    serve, ca: DevelopmentCA
) -> None:
    server = await serve(ca.issue("vault"))
    client = CellTLS(_ca_certificate_naming(ca, "teller"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            server.url, ssl=client.client, server_hostname="vault.cell.orchestro.local"
        ) as response,
    ):
        assert response.status == 403
        problem = await response.json()
    assert "is a CA certificate (basicConstraints CA:TRUE)" in problem["detail"]


def _get(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(
            raw, server_hostname="vault.cell.orchestro.local", session=session
        ) as tls,
    ):
        tls.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data, tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_resumed_tls_session_is_no_caller(
    serve, ca: DevelopmentCA, version: ssl.TLSVersion
) -> None:
    # A resumed session verifies no certificate: a client whose root was removed (or whose
    # certificate expired) resumed a session from before and passed as its cell (TLS 1.3
    # tickets and TLS 1.2 session IDs both did, from outside, after a root rotation).
    server = await serve(ca.issue("vault"))
    port = int(server.url.split(":")[2].split("/")[0])
    client = CellTLS(ca.issue("teller")).client
    client.maximum_version = version
    first, session, _ = await asyncio.to_thread(_get, port, client)
    assert b'"cell": "teller"' in first
    if version is ssl.TLSVersion.TLSv1_3:
        assert session is not None
        assert not session.has_ticket  # none issued, none to resume
        return
    again, _, reused = await asyncio.to_thread(_get, port, client, session)
    assert reused  # TLS 1.2 resumes by session ID in OpenSSL's server cache
    assert again.startswith(b"HTTP/1.1 403 "), again
    assert b"resumed a TLS session" in again


def test_peer_identity_and_rotation_work_on_uvloop(ca: DevelopmentCA) -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional: pip install uvloop")

    async def scenario() -> list[str | None]:
        tls = CellTLS(ca.issue("vault"))
        resolve = PeerIdentity(tls.trust_domain)

        async def whoami(request: web.Request) -> web.Response:
            return web.json_response({"cell": resolve(request).cell})

        app = web.Application()
        app.router.add_get("/whoami", whoami)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server).start()
            url = f"https://127.0.0.1:{runner.addresses[0][1]}/whoami"
            first = (await call(CellTLS(ca.issue("teller")), url))["cell"]
            tls.update(ca.issue("vault"))
            second = (await call(CellTLS(ca.issue("shop")), url))["cell"]
            return [first, second]
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == ["teller", "shop"]


async def test_two_cells_opened_with_no_setup_call_each_other_over_mtls(serve, state: Path) -> None:
    vault = CellSecurity.open("vault", SecuritySettings())
    teller = CellSecurity.open("teller", SecuritySettings())  # the same CA, from the state dir
    server = await serve(vault.tls.identity)
    assert (await call(teller.tls, server.url))["cell"] == "teller"
