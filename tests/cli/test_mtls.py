"""Cells in separate processes, run with no flags, call each other over mutual TLS: allowed
callers get through, others get a 403 naming the rule, the public port does not serve
internal services, and clients without a certificate of the trust domain are refused at
the handshake (TLS 1.2 and 1.3). Also with ``--replicas 2``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestro.security.ca import DevelopmentCA
from orchestro.security.tls import CellTLS

from ..conftest import Cli, run_cli, start_cli

MESH = re.compile(r"cell (\S+) serving on (http://\S+) .*mesh on (https://[^);\s]+)")
VAULT = "examples/vault.py"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A state directory of its own (registry and development CA) for the processes and the
    test, which reads the CA the first run created."""
    state = tmp_path / "state"
    monkeypatch.setenv("ORCHESTRO_STATE_DIR", str(state))
    return {"ORCHESTRO_STATE_DIR": str(state)}


def meshes(cli: Cli) -> dict[str, tuple[str, str]]:
    found = {}
    for line in cli.stdout:
        if match := MESH.search(line):
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


async def get(session: aiohttp.ClientSession, url: str, want: int = 200) -> Any:
    """GET ``url`` until it answers ``want`` (the caller's view may not list the callee yet)."""
    async with asyncio.timeout(30):
        while True:
            async with session.get(url) as response:
                body = await response.json(content_type=None)
                if response.status == want:
                    return body
                if response.status not in (503, 502, 500):
                    raise AssertionError(f"{url}: {response.status} {body}")
            await asyncio.sleep(0.2)


async def stop(*clis: Cli) -> None:
    for cli in clis:
        cli.signal(signal.SIGTERM)
    for cli in clis:
        await cli.exits_with(0)


async def exchange(url: str, context: ssl.SSLContext, path: str) -> tuple[bytes, str | None]:
    """One raw HTTP/1.1 request over TLS: (what came back, the TLS version); a refused
    handshake raises or comes back empty."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname="vault.cell.orchestro.local"
    )
    try:
        version = writer.get_extra_info("ssl_object").version()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: vault\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await reader.read(), version
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def refused(url: str, context: ssl.SSLContext) -> str:
    """What refused a handshake; fails if the request was served."""
    try:
        answer, _ = await exchange(url, context, "/secret")
    except (ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__
    assert b"HTTP/1.1" not in answer, answer[:200]
    return "closed"


async def test_two_processes_no_flags(env: dict[str, str], cli_processes: list[Cli]) -> None:
    vault = await start_cli("run", VAULT, "--cell", "vault", env=env)
    cli_processes.append(vault)
    await vault.wait_serving(1)
    callers = await start_cli(
        "run", VAULT, "--cell", "teller", "--cell", "auditor", "--cell", "shop", env=env
    )
    cli_processes.append(callers)
    await callers.wait_serving(3)
    public = {name: urls[0] for name, urls in {**meshes(vault), **meshes(callers)}.items()}
    assert set(public) == {"vault", "teller", "auditor", "shop"}, vault.stdout + callers.stdout
    async with aiohttp.ClientSession() as session:
        # An allowed cell calls the other process's internal service (the vault proves
        # the caller from its certificate: the secret says who opened it).
        assert await get(session, f"{public['teller']}/withdraw") == {
            "approved": True,
            "secret_length": len("opened by teller"),
        }
        # A service's own list: the auditor, and only it, may run the audit.
        assert await get(session, f"{public['auditor']}/audit") == {
            "reads": 1,
            "auditor": "auditor",
        }
        # A cell not on the list: a 403 naming the caller, the cell and the rule.
        assert await get(session, f"{public['shop']}/peek") == {
            "status": 403,
            "rule": "allow",
            "detail": "cell 'vault' allows only ['teller'] for GET /secret; caller is cell 'shop'",
        }
        # The public port: public services and probes, and no internal service at all.
        async with session.get(f"{public['vault']}/secret") as response:
            assert response.status == 404
            assert (await response.json(content_type=None))["detail"] == (
                "no service answers /secret"
            )
        async with session.post(f"{public['vault']}/audit") as response:
            assert response.status == 404
        assert await get(session, f"{public['vault']}/status") == {"vault": "open"}
        assert (await get(session, f"{public['vault']}/healthz"))["status"] == "ok"
        openapi = await get(session, f"{public['vault']}/openapi.json")
        assert set(openapi["paths"]) == {"/status"}
    await stop(vault, callers)


async def test_the_mesh_listener_refuses_clients_not_proven_by_the_trust_domain(
    env: dict[str, str], tmp_path: Path, cli_processes: list[Cli]
) -> None:
    vault = await start_cli("run", VAULT, "--cell", "vault", env=env)
    cli_processes.append(vault)
    await vault.wait_serving(1)
    mesh = meshes(vault)["vault"][1]
    ca = await asyncio.to_thread(DevelopmentCA.load_or_create, trust_domain="orchestro.local")

    # The teller's own certificate from the CA the first run made: served, over both TLS
    # versions, and the vault reads who called from the certificate.
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = CellTLS(ca.issue("teller")).client
        context.minimum_version = context.maximum_version = version
        answer, negotiated = await exchange(mesh, context, "/secret")
        assert negotiated == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer.endswith(b'{"value":"opened by teller"}'), answer[-200:]
        # The probes' path answers on the mesh listener too (for a caller with a certificate).
        health, _ = await exchange(mesh, context, "/healthz")
        assert health.startswith(b"HTTP/1.1 200"), health[:200]

    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        # No client certificate at all (but trusting the vault's CA).
        bare = ssl.create_default_context(cafile=str(ca.cert_file))
        bare.minimum_version = bare.maximum_version = version
        assert await refused(mesh, bare)
        # A certificate from a foreign CA claiming to be the allowed teller.
        foreign = await asyncio.to_thread(
            DevelopmentCA.load_or_create, tmp_path / "foreign", trust_domain="orchestro.local"
        )
        claim = dataclasses.replace(foreign.issue("teller"), bundle=(ca.cert,))
        impostor = CellTLS(claim).client
        impostor.minimum_version = impostor.maximum_version = version
        assert await refused(mesh, impostor)
    await stop(vault)


async def test_replicated_app_calls_internal_services_across_replicas(
    env: dict[str, str], cli_processes: list[Cli]
) -> None:
    app = await start_cli("run", VAULT, "--replicas", "2", env=env)
    cli_processes.append(app)
    public = await app.wait_serving(4, timeout=60)  # the controller's lines: shared ports
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # spread over both vault replicas by the balancer
            assert (await get(session, f"{public['teller']}/withdraw"))["approved"] is True
        refusal = await get(session, f"{public['shop']}/peek")
        assert (refusal["status"], refusal["rule"]) == (403, "allow")
    await stop(app)


POLICY_APP, SNOOP = "tests/cli/policy_app.py", "tests/cli/policy_snoop.py"


async def peek_with(env: dict[str, str], cli_processes: list[Cli], *flags: str) -> Any:
    """What the snoop (another app's cell) gets from the ledger run with ``flags``, and the
    ledger's process."""
    app = await start_cli("run", POLICY_APP, *flags, env=env)
    cli_processes.append(app)
    urls = await app.wait_serving(2)
    snoop = await start_cli("run", SNOOP, env=env)
    cli_processes.append(snoop)
    (snoop_url,) = (await snoop.wait_serving(1)).values()
    async with aiohttp.ClientSession() as session:
        # The api calls the ledger in process: checked by the same rule, and allowed.
        assert await get(session, f"{urls['api']}/balance") == {"balance": 100}
        seen = await get(session, f"{snoop_url}/peek")
    await stop(app, snoop)
    return seen, app


async def test_strict_policy_enforces_the_call_graph_where_nothing_is_declared(
    env: dict[str, str], cli_processes: list[Cli]
) -> None:
    # Declared (the default): nothing is declared, so any cell of the trust domain may call.
    seen, _ = await peek_with(env, cli_processes)
    assert seen == {"status": 200, "body": {"balance": 100}}
    # Strict: only the callers found in the code (the api) may.
    seen, _ = await peek_with(env, cli_processes, "--policy", "strict")
    assert seen["status"] == 403
    assert seen["problem"]["rule"] == "allow"
    assert seen["problem"]["caller"] == "snoop"
    assert seen["problem"]["detail"] == (
        "cell 'ledger' is called only by ['api'] in the cells' code (policy strict: the "
        "derived allow-list) for GET /balance; caller is cell 'snoop'"
    )
    # Audit: served, and the refusal strict would make is logged.
    seen, app = await peek_with(env, cli_processes, "--policy", "audit")
    assert seen == {"status": 200, "body": {"balance": 100}}
    assert "policy audit: would refuse: cell 'ledger' is called only by ['api']" in (
        await app.stderr()
    )


async def test_policy_prints_the_call_graph_and_the_lists_it_implies() -> None:
    code, out, err = await run_cli("policy", VAULT)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == [
        "calls (from mesh.client attributes):",
        "  auditor -> vault",
        "  shop -> vault",
        "  teller -> vault",
    ]
    assert "  vault GET /secret  allow=['teller'] (declared on the cell); strict: ['teller']" in (
        lines
    )
    assert '  @cell("vault", allow=["auditor", "shop", "teller"])' in lines
    assert any(
        line.startswith("warning: shop calls vault, whose GET /secret, POST /audit")
        for line in lines
    )
    code, out, _ = await run_cli("policy", POLICY_APP, "--json")
    assert code == 0
    found = json.loads(out)
    assert found["calls"] == [{"caller": "api", "callee": "ledger"}]
    assert found["implied"] == {"ledger": ["api"]}
    assert found["services"][0]["allow"] is None
    assert found["services"][0]["strict"] == ["api"]


async def test_bad_security_input_is_one_line() -> None:
    code, _, err = await run_cli("run", VAULT, "--policy", "lenient")
    assert code == 2
    assert "invalid choice: 'lenient'" in err
    code, _, err = await run_cli("run", VAULT, "--mesh-port", "8443")
    assert (code, err.strip()) == (
        2,
        "orchestro: error: --mesh-port sets one cell's mesh port, but 'examples/vault.py' has "
        "4 cells: add --cell NAME, or leave it 0 (each cell picks a free one)",
    )
    code, _, err = await run_cli("policy", "tests/cli/no_such_app.py")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err


async def presented(url: str, context: ssl.SSLContext) -> bytes:
    """The certificate the mesh listener presents to a new connection (DER)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname="vault.cell.orchestro.local"
    )
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def test_rotation_of_files_under_load_loses_no_request(
    env: dict[str, str], tmp_path: Path, cli_processes: list[Cli]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    ca = await asyncio.to_thread(DevelopmentCA.load_or_create, trust_domain="orchestro.local")
    files = tmp_path / "certs"  # what cert-manager mounts and rewrites
    cert, key, bundle = ca.issue("vault").write(files)
    vault = await start_cli(
        "run",
        VAULT,
        "--cell",
        "vault",
        env={
            **env,
            "ORCHESTRO_CERT_FILE": str(cert),
            "ORCHESTRO_KEY_FILE": str(key),
            "ORCHESTRO_BUNDLE_FILE": str(bundle),
            "ORCHESTRO_RELOAD_INTERVAL": "0.2",
        },
    )
    cli_processes.append(vault)
    await vault.wait_serving(1)
    mesh = meshes(vault)["vault"][1]
    teller = await start_cli("run", VAULT, "--cell", "teller", env=env)
    cli_processes.append(teller)
    withdraw = f"{(await teller.wait_serving(1))['teller']}/withdraw"
    statuses: dict[str, int] = {}
    done = asyncio.Event()
    as_teller = CellTLS(ca.issue("teller")).client

    async def through_the_pool(session: aiohttp.ClientSession) -> None:
        while not done.is_set():  # the teller's kept-alive mesh connections
            async with session.get(withdraw) as response:
                statuses[f"pool {response.status}"] = statuses.get(f"pool {response.status}", 0) + 1

    async def new_connections() -> None:
        while not done.is_set():  # a handshake per request
            answer, _ = await exchange(mesh, as_teller, "/secret")
            status = answer[9:12].decode() or "none"
            statuses[f"new {status}"] = statuses.get(f"new {status}", 0) + 1

    async with aiohttp.ClientSession() as session:
        await get(session, withdraw)
        load = [asyncio.create_task(through_the_pool(session)) for _ in range(4)]
        load += [asyncio.create_task(new_connections()) for _ in range(2)]
        for _ in range(4):
            renewed = ca.issue("vault")
            renewed.write(files)  # key, certificate, bundle: each replaced atomically
            want = renewed.leaf.public_bytes(Encoding.DER)
            async with asyncio.timeout(20):  # new connections get the new certificate
                while await presented(mesh, as_teller) != want:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
        done.set()
        await asyncio.gather(*load)
    assert set(statuses) == {"pool 200", "new 200"}, statuses
    assert statuses["pool 200"] > 20
    assert statuses["new 200"] > 10
    assert (await vault.stderr()).count("renewed: valid until") >= 4
    await stop(vault, teller)


async def test_a_mesh_port_in_use_is_one_line_naming_the_setting(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = await run_cli(
            "run", VAULT, "--cell", "vault", "--mesh-port", str(port), env=env
        )
    assert code == 2
    assert err.strip() == (
        f"orchestro: error: cannot start cell 'vault': mesh port {port} on 127.0.0.1 is in use; "
        "stop the process using it, or choose another port with --mesh-port or [security] "
        "mesh_port (0 picks a free one)"
    )


async def test_the_escape_hatch_runs_without_identities(
    env: dict[str, str], cli_processes: list[Cli]
) -> None:
    vault = await start_cli("run", VAULT, "--cell", "vault", "--mesh-tls", "false", env=env)
    cli_processes.append(vault)
    url = (await vault.wait_serving(1))["vault"]
    assert meshes(vault) == {}  # no mesh listener announced
    assert "mesh on" not in "".join(vault.stdout)
    async with aiohttp.ClientSession() as session:
        # One plain port serves everything; a network caller is anonymous, so refused.
        async with session.get(f"{url}/secret") as response:
            assert response.status == 403
            problem = await response.json(content_type=None)
        assert problem["caller"] is None
        assert problem["detail"].endswith("caller is anonymous (no client certificate)")
        assert await get(session, f"{url}/status") == {"vault": "open"}
    assert not (Path(env["ORCHESTRO_STATE_DIR"]) / "ca").exists()  # no CA was made
    await stop(vault)
