"""The cell boundary wired into the host: allow= declared and checked at decoration, the
access step (network and test kit), in-process calls checked by the same rule with the
calling cell's identity, audit mode, and the mesh listener's identity against a fake clock
(expiry, renewal, clock skew) on real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from examples.vault import Auditor, Shop, Teller, Vault

from orchestro import CallPolicy, Mesh, cell, service
from orchestro.errors import CellDefinitionError, HTTPError, RemoteError
from orchestro.host import CellHost
from orchestro.mesh import callee_name, clients_of
from orchestro.security import ANONYMOUS
from orchestro.security.boundary import CellSecurity
from orchestro.security.policy import PolicyMode
from orchestro.security.settings import SecuritySettings
from orchestro.testing import CellClient, read_metrics

NOW = dt.datetime.now(dt.UTC)


def test_allow_is_declared_on_cells_and_services() -> None:
    from orchestro.cell.spec import spec_of

    spec = spec_of(Vault)
    assert spec.allow == ("teller",)
    assert spec.operation("audit").service.allow == ("auditor",)
    assert spec.operation("secret").service.allow is None


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda: service.get("/x", internal=True, allow="teller"),
            r"\.f: allow= is a list of cell names, e.g. allow=\['teller'\]$",
        ),
        (
            lambda: service.get("/x", internal=True, allow=["Teller"]),
            r"\.f: allow= lists 'Teller', which is not a cell name",
        ),
        (
            lambda: service.get("/x", allow=["teller"]),
            r"\.f: allow= needs internal=True \(a public service answers anyone",
        ),
    ],
)
def test_bad_service_allow_lists_name_the_method(declare: Callable[[], Any], message: str) -> None:
    async def f(self: object) -> None: ...

    with pytest.raises(CellDefinitionError, match=message):
        declare()(f)


def test_bad_cell_allow_lists_name_the_cell() -> None:
    with pytest.raises(CellDefinitionError, match=r"@cell\('vault'\): allow= lists 3"):
        cell("vault", allow=[3])  # type: ignore[list-item]


def test_clients_of_is_the_call_graph_in_the_code() -> None:
    assert clients_of(Teller) == {"vault": Vault}
    assert clients_of(Vault) == {}
    assert callee_name(Vault) == "vault"
    assert callee_name("ledger") == "ledger"
    assert callee_name("https://example.com") is None


async def test_the_test_kit_plays_a_caller_and_the_rule_names_it() -> None:
    async with CellClient(Vault, caller="teller") as client:
        assert (await client.get("/secret")).json() == {"value": "opened by teller"}
        refused = await client.post("/audit")
        assert refused.status == 403
        problem = refused.json()
        assert problem["detail"] == (
            "service POST /audit of cell 'vault' allows only ['auditor']; caller is cell 'teller'"
        )
        assert (problem["cell"], problem["caller"], problem["rule"]) == ("vault", "teller", "allow")
    async with CellClient(Vault) as client:  # anonymous
        problem = (await client.get("/secret")).json()
        assert problem["caller"] is None
        assert problem["detail"].endswith("caller is anonymous (no client certificate)")


async def hosts(mesh: Mesh, *cells: type[Any], **options: Any) -> list[CellHost]:
    started = []
    for cls in cells:
        host = CellHost(cls, port=0, mesh=mesh, **options)
        await host.start()
        started.append(host)
    return started


async def test_in_process_calls_obey_the_same_rules_as_the_calling_cell() -> None:
    async with Mesh("memory://") as mesh:
        vault, teller, auditor, shop = await hosts(mesh, Vault, Teller, Auditor, Shop)
        try:
            # No socket: the mesh hands the call to the vault's host, as the teller.
            assert (await teller.instance.withdraw()).approved
            assert (await auditor.instance.audit()).auditor == "auditor"
            refusal = await shop.instance.peek()
            assert refusal.status == 403
            assert refusal.detail == (
                "cell 'vault' allows only ['teller'] for GET /secret; caller is cell 'shop'"
            )
            with pytest.raises(RemoteError) as info:
                await teller.instance.vault.audit()
            assert info.value.status == 403
            assert info.value.problem["caller"] == "teller"
        finally:
            for host in (shop, auditor, teller, vault):
                await host.drain()


async def test_audit_mode_counts_and_serves_in_process_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Mesh("memory://") as mesh:
        (vault,) = await hosts(mesh, Vault, policy=PolicyMode.AUDIT)
        (shop,) = await hosts(mesh, Shop)
        try:
            with pytest.raises(Exception, match="its allow-list did not hold"):
                await shop.instance.peek()  # served: the shop read the secret
            await shop.instance.vault.secret()
            assert vault.refusals.counts == {("GET /secret", "shop", "allow"): 2}
            assert (
                read_metrics().value(
                    "orchestro_policy_audit_refusals_total",
                    orchestro_operation="GET /secret",
                    orchestro_caller="shop",
                )
                == 2
            )
            logged = [r.getMessage() for r in caplog.records if "policy audit" in r.getMessage()]
            assert len(logged) == 1  # once per operation and caller; the count says the rest
        finally:
            await shop.drain()
            await vault.drain()


async def test_audit_mode_never_opens_internal_services_to_anonymous_callers() -> None:
    """Audit mode lets an allow-list's refusals through (logged, counted); that internal
    services refuse callers with no cell identity is the boundary itself, enforced."""
    (vault,) = await hosts(Mesh("memory://"), Vault, policy=PolicyMode.AUDIT)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{vault.url}/secret") as response,
        ):
            assert response.status == 403
            assert (await response.json())["rule"] == "internal"
        with pytest.raises(HTTPError) as info:  # in process, from no cell at all
            vault.authorize("secret", ANONYMOUS)
        assert info.value.status == 403
    finally:
        await vault.drain()


async def test_a_cell_with_auth_and_a_mesh_listener_starts_with_the_file_s_settings(
    tmp_path: Path, state: Path
) -> None:
    """The [auth] settings reach both gateways (the mesh listener's too), not only the
    public one: a cell declaring auth= starts with them from the file, none from the
    environment."""
    keys = tmp_path / "keys"
    keys.write_text(f"ci={'k' * 40}\n")

    @cell("keyed", port=0)
    class Keyed:
        @service.get("/me", auth="api-key")
        async def me(self) -> str:
            return "ok"

    from orchestro.config import AuthSettings

    host = CellHost(
        Keyed,
        port=0,
        auth=AuthSettings(api_keys_file=keys),
        security=security("keyed", dt.datetime.now(dt.UTC)),
    )
    await host.start()
    try:
        async with aiohttp.ClientSession() as session:
            ok = {"Authorization": f"Bearer {'k' * 40}"}
            async with session.get(f"{host.url}/me", headers=ok) as response:
                assert response.status == 200
    finally:
        await host.drain()


def security(cell_name: str, now: dt.datetime, **settings: Any) -> CellSecurity:
    return CellSecurity.open(cell_name, SecuritySettings(**settings), now=now)


async def call_secret(vault: CellHost, teller: CellSecurity) -> int:
    """The teller's call to the vault's mesh listener, over a new connection."""
    assert vault.mesh_url is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{vault.mesh_url}/secret",
            ssl=teller.tls.client,
            server_hostname=teller.tls.server_name("vault"),
        ) as response,
    ):
        return response.status


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("ORCHESTRO_STATE_DIR", str(directory))
    return directory


async def test_an_expired_identity_is_refused_and_its_renewal_serves_again(state: Path) -> None:
    # The vault's certificate was issued two days ago for one day (a laptop that slept).
    vault_id = security("vault", NOW - dt.timedelta(days=2), leaf_lifetime=24 * 3600)
    teller = security("teller", NOW)
    vault = CellHost(Vault, port=0, security=vault_id)
    await vault.start()
    try:
        with pytest.raises(aiohttp.ClientConnectorCertificateError, match="expired"):
            await call_secret(vault, teller)
        # One turn of the renewal loop, on a clock that says now: 70% of its life is past.
        turns = 0

        async def one_turn(seconds: float) -> None:
            nonlocal turns
            turns += 1
            if turns > 1:
                raise asyncio.CancelledError

        from orchestro.security.sources import keep_fresh

        with pytest.raises(asyncio.CancelledError):
            await keep_fresh(
                vault_id.tls, vault_id.source, interval=5.0, clock=lambda: NOW, sleep=one_turn
            )
        assert await call_secret(vault, teller) == 200
    finally:
        await vault.drain()


@pytest.mark.parametrize(("ahead", "served"), [(dt.timedelta(minutes=3), True),
                                                (dt.timedelta(minutes=10), False)])  # fmt: skip
async def test_clock_skew_within_the_backdating_is_harmless(
    state: Path, ahead: dt.timedelta, served: bool
) -> None:
    # The vault's issuer runs ahead of the teller's clock: leaves are backdated 5 minutes.
    # The real clock's now (the TLS handshake checks against it), not the module's NOW:
    # a long test run imports this module many minutes before the test runs.
    now = dt.datetime.now(dt.UTC)
    vault_id = security("vault", now + ahead)
    vault = CellHost(Vault, port=0, security=vault_id)
    await vault.start()
    try:
        teller = security("teller", now)
        if served:
            assert await call_secret(vault, teller) == 200
        else:
            with pytest.raises(aiohttp.ClientConnectorCertificateError, match="not yet valid"):
                await call_secret(vault, teller)
    finally:
        await vault.drain()


async def test_the_public_port_serves_public_services_and_probes_only(state: Path) -> None:
    vault = CellHost(Vault, port=0, security=security("vault", NOW))
    await vault.start()
    try:
        record = vault.registry_record()
        assert (record.port, record.mesh_port) == (vault.port, vault.mesh_port)
        assert record.mesh_url == vault.mesh_url
        async with aiohttp.ClientSession() as session:
            for path, status in [("/secret", 404), ("/status", 200), ("/healthz", 200),
                                 ("/readyz", 200), ("/metrics", 200),
                                 ("/prometheus/sd", 200)]:  # fmt: skip
                async with session.get(f"{vault.url}{path}") as response:
                    assert response.status == status, path
    finally:
        await vault.drain()


async def test_each_calling_cell_has_its_own_binding_and_pool_kept_alive(state: Path) -> None:
    vault = CellHost(Vault, port=0, security=security("vault", NOW))
    await vault.start()
    try:
        registry = f"static://vault=http://127.0.0.1:{vault.port}?mesh={vault.mesh_port}"
        teller_id, auditor_id = security("teller", NOW), security("auditor", NOW)
        async with Mesh(registry) as mesh:
            teller, auditor = (
                mesh.bind("teller", teller_id.tls),
                mesh.bind("auditor", auditor_id.tls),
            )
            assert mesh.bind("teller") is teller  # one binding per caller
            assert (teller.caller, auditor.caller) == ("teller", "auditor")
            assert teller.transport is not auditor.transport
            # Each proves its own cell over the network: the vault reads it from the certificate.
            secret = await teller.client(Vault).secret()
            assert secret.value == "opened by teller"
            with pytest.raises(RemoteError) as info:
                await auditor.client(Vault).secret()
            assert info.value.problem["caller"] == "auditor"
            # Kept alive and pooled: 1,000 calls at concurrency 8 cost at most 8 handshakes.
            assert vault.security is not None
            before = vault.security.tls.handshakes
            stub = teller.client(Vault)

            async def worker() -> None:
                for _ in range(125):
                    await stub.status()

            await asyncio.gather(*(worker() for _ in range(8)))
            assert vault.security.tls.handshakes - before <= 8
            assert vault.security.tls.handshakes >= 2  # the teller's and the auditor's
    finally:
        await vault.drain()


async def test_a_callee_of_another_ca_fails_the_call_at_once_saying_why(
    tmp_path: Path, state: Path
) -> None:
    """A caller whose bundle does not hold the callee's CA: the call fails with the reason
    and what to check, not a generic connection error."""
    from orchestro.errors import TransportError
    from orchestro.mesh.transports.base import CallRequest
    from orchestro.mesh.transports.http import HttpTransport
    from orchestro.security.ca import DevelopmentCA
    from orchestro.security.tls import CellTLS

    vault = CellHost(Vault, port=0, security=security("vault", dt.datetime.now(dt.UTC)))
    await vault.start()
    foreign = await asyncio.to_thread(
        DevelopmentCA.load_or_create, tmp_path / "foreign", trust_domain="orchestro.local"
    )
    transport = HttpTransport(tls=CellTLS(foreign.issue("teller")))
    try:
        with pytest.raises(TransportError) as info:
            await transport.send(
                vault.registry_record(), CallRequest("GET", "/secret", operation="secret"), 5.0
            )
        message = str(info.value)
        assert "its certificate did not verify" in message
        assert "certs show CERT --cell vault" in message
    finally:
        await transport.aclose()
        await vault.drain()


async def test_a_peer_that_never_speaks_tls_is_dropped_at_the_handshake_deadline(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket to the mesh port that says nothing is closed once the handshake deadline
    passes (asyncio's 60 s otherwise, uncounted by the connection limits)."""
    from orchestro.gateway import server

    monkeypatch.setattr(server, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    vault = CellHost(Vault, port=0, security=security("vault", dt.datetime.now(dt.UTC)))
    await vault.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", vault.mesh_port)
        async with asyncio.timeout(10):  # an outcome, not a speed: the server hangs up
            assert await reader.read() == b""
        writer.close()
        # The listener still serves a real handshake afterwards.
        assert await call_secret(vault, security("teller", dt.datetime.now(dt.UTC))) == 200
    finally:
        await vault.drain()


async def test_tls_handshakes_beyond_the_bound_are_closed_at_once_the_rest_served(
    state: Path,
) -> None:
    """Sockets that open a handshake and say nothing hold a read buffer each, uncounted by
    the connection limits: beyond max_tls_handshakes under way, a new connection is closed
    at once; once they are gone, the listener serves a real handshake."""
    from orchestro.config import GatewaySettings

    now = dt.datetime.now(dt.UTC)
    vault = CellHost(
        Vault,
        port=0,
        settings=GatewaySettings(max_tls_handshakes=3),
        security=security("vault", now),
    )
    await vault.start()
    listener = vault.listeners.mesh
    assert listener is not None
    held = []
    try:
        for _ in range(3):
            held.append(await asyncio.open_connection("127.0.0.1", vault.mesh_port))
        async with asyncio.timeout(10):  # a hang guard: the listener counts them
            while listener.handshakes.active < 3:
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", vault.mesh_port)
        async with asyncio.timeout(10):  # an outcome, not a speed: closed, not held
            try:
                data = await reader.read()
            except ConnectionResetError:
                data = b""
        writer.close()
        assert data == b""
        assert listener.handshakes.refused == 1
        for _, stalled in held:
            stalled.close()
        async with asyncio.timeout(10):
            while listener.handshakes.active:
                await asyncio.sleep(0.01)
        assert await call_secret(vault, security("teller", now)) == 200
    finally:
        for _, stalled in held:
            stalled.close()
        await vault.drain()


async def test_a_fault_injector_given_to_the_mesh_serves_each_cell_s_mtls_calls(
    state: Path,
) -> None:
    """A cell with an identity calls through its own binding of the mesh (its certificate):
    a test transport given to the mesh is kept there, not bypassed by a plain one."""
    from orchestro.registry import Registration
    from orchestro.registry.memory import MemoryRegistry
    from orchestro.testing import FaultInjector

    registry = MemoryRegistry(ttl=30)
    registration = Registration(registry)
    now = dt.datetime.now(dt.UTC)
    vault = CellHost(Vault, port=0, security=security("vault", now), registration=registration)
    await vault.start()
    faults = FaultInjector().abort_with(503, cell="vault")
    calls = Mesh(registry, transport=faults, policy=CallPolicy(max_attempts=1))
    await calls.start()
    teller = CellHost(Teller, port=0, mesh=calls, security=security("teller", now))
    await teller.start()
    try:
        with pytest.raises(RemoteError) as info:
            await teller.instance.withdraw()  # over the network: the vault is elsewhere
        assert info.value.status == 503
        assert "fault injected by the test" in info.value.problem["detail"]
        assert faults.injected == 1
        faults.clear()  # the same binding, its calls now sent over mutual TLS as the teller
        assert (await teller.instance.withdraw()).approved
        assert faults.injected == 1
    finally:
        await teller.drain()
        await calls.aclose()
        await vault.drain()
        await registration.aclose()
