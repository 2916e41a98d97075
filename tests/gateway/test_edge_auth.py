"""Bearer tokens: JWTs signed with keys made here, checked against a JWKS file or a JWKS
served by a real local HTTP server; API keys; 401s with RFC 6750 WWW-Authenticate."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import BaseModel

from orchestro import Caller, CellDefinitionError, ConfigurationError, cell, service
from orchestro.config import AuthSettings
from orchestro.gateway import jwks as jwks_module
from orchestro.gateway import tokens as auth_module
from orchestro.testing import CellClient
from tests.conftest import start_cli

ISSUER = "https://id.example"
AUDIENCE = "shop"
API_KEY = "k-" + "7" * 30


class Me(BaseModel):
    cell: str | None
    subject: str | None
    scheme: str | None
    scope: str | None


@cell("shop", auth="jwt")
class Shop:
    @service.get("/me")
    async def me(self, caller: Caller) -> Me:
        return Me(
            cell=caller.cell,
            subject=caller.subject,
            scheme=caller.scheme,
            scope=caller.claims.get("scope"),
        )

    @service.get("/status", auth="none")
    async def status(self) -> Me:
        return Me(cell=None, subject=None, scheme=None, scope=None)

    @service.get("/machines", auth="api-key")
    async def machines(self, caller: Caller) -> Me:
        return Me(cell=None, subject=caller.subject, scheme=caller.scheme, scope=None)

    @service.get("/either", auth=("jwt", "api-key"))
    async def either(self, caller: Caller) -> Me:
        return Me(cell=caller.cell, subject=caller.subject, scheme=caller.scheme, scope=None)


class Keys:
    """Signing keys made for the test, and the JWKS that publishes their public halves."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: list[dict[str, Any]] = [
            self.jwk(self.rsa, "rsa-1", "RS256"),
            self.jwk(self.ec, "ec-1", "ES256"),
        ]

    @staticmethod
    def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(alg)
        data: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
        return {**data, "kid": kid, "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": self.published}

    def token(
        self, key: Any = None, *, kid: str = "rsa-1", alg: str = "RS256", **claims: Any
    ) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.rsa, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def settings_for(jwks: str, **more: Any) -> AuthSettings:
    more.setdefault("api_keys", f"default={API_KEY}")
    return AuthSettings(jwks=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **more)


@pytest.fixture
def jwks_file(keys: Keys, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_jwt_lets_in_and_the_handler_sees_its_claims(
    keys: Keys, jwks_file: Path
) -> None:
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        for token in (
            keys.token(scope="orders:read"),
            keys.token(keys.ec, kid="ec-1", alg="ES256", scope="orders:read"),
        ):
            answer = await client.get("/me", headers=bearer(token))
            assert answer.status == 200, answer.text
            assert answer.json() == {
                "cell": None,
                "subject": "alice",
                "scheme": "jwt",
                "scope": "orders:read",
            }


async def test_a_jwt_verified_for_one_route_does_not_open_an_api_key_route(
    keys: Keys, jwks_file: Path
) -> None:
    # The verified-token cache serves the whole gateway: it must still obey each route's
    # schemes (a JWT holder must not reach a service that takes API keys only).
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        token = keys.token()
        assert (await client.get("/machines", headers=bearer(token))).status == 401
        assert (await client.get("/me", headers=bearer(token))).status == 200  # now cached
        assert (await client.get("/machines", headers=bearer(token))).status == 401
        machine = await client.get("/machines", headers=bearer(API_KEY))
        assert machine.status == 200
        assert machine.json()["scheme"] == "api-key"


async def test_two_authorization_headers_are_400_whichever_comes_first(
    keys: Keys, jwks_file: Path
) -> None:
    # Reading the first of two (the old behaviour: good then bad let in) leaves a proxy
    # that checks the last one to disagree with us about who the caller is.
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        for first, second in ((API_KEY, "k-" + "8" * 30), ("k-" + "8" * 30, API_KEY)):
            reader, writer = await asyncio.open_connection(*client.host.url[7:].split(":"))
            writer.write(
                f"GET /machines HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n\r\n".encode()
            )
            answer = (await reader.read()).decode()
            writer.close()
            assert answer.startswith("HTTP/1.1 400 "), answer
            assert "2 Authorization headers: send one" in answer
            assert 'error="invalid_request"' in answer
        assert (await client.get("/machines", headers=bearer(API_KEY))).status == 200


async def test_no_token_is_401_with_a_bare_bearer_challenge(keys: Keys, jwks_file: Path) -> None:
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        for headers in (
            {},
            {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
            {"Authorization": "Bearer "},
        ):
            answer = await client.get("/me", headers=headers)
            assert answer.status == 401
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="shop"'  # RFC 6750 §3.1
            assert answer.content_type == "application/problem+json"
            assert "needs a bearer token (jwt)" in answer.json()["detail"]
        # A service that opts out answers without one.
        assert (await client.get("/status")).status == 200
        # The refusals are counted, by scheme.
        metrics = (await client.get("/metrics")).text
    (sample,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("orchestro_gateway_unauthenticated_total{")
    ]
    assert 'orchestro_auth="jwt"' in sample
    assert 'orchestro_cell="shop"' in sample
    assert sample.endswith(" 3.0")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda k: k.token(exp=int(time.time()) - 3600), "the token expired (exp "),
        (
            lambda k: k.token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "the signature does not verify with key 'rsa-1'",
        ),
        (lambda k: k.token(aud="another"), "not for audience 'shop'"),
        (lambda k: k.token(iss="https://evil.example"), "not issued by 'https://id.example'"),
        (lambda k: k.token(sub=None), "no 'sub' claim"),
        (lambda k: k.token(nbf=int(time.time()) + 3600), "not valid yet"),
        (lambda k: k.token(kid="unknown"), "no key 'unknown' in the JWKS"),
        (lambda k: k.token(kid="ec-1"), "alg RS256 does not fit key 'ec-1'"),
        (lambda k: "not.a.jwt", "not a readable JWT"),
        (lambda k: k.token(exp=str(int(time.time()) + 300)), "'exp' claim is not a number"),
        (lambda k: k.token(nbf=str(int(time.time()))), "'nbf' claim is not a number"),
        (lambda k: k.token(iat=str(int(time.time()))), "'iat' claim is not a number"),
        (lambda k: "opaque-token", "not a JWT"),
        # Algorithm confusion: the RSA public key used as an HMAC secret.
        (
            lambda k: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60},
                "x" * 64,
                algorithm="HS256",
                headers={"kid": "rsa-1"},
            ),
            "alg 'HS256' is not accepted",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60},
                None,
                algorithm="none",
            ),
            "alg 'none' is not accepted",
        ),
    ],
)
async def test_a_bad_token_is_401_invalid_token_saying_why(
    keys: Keys, jwks_file: Path, make: Any, why: str
) -> None:
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        answer = await client.get("/me", headers=bearer(make(keys)))
        assert answer.status == 401, answer.text
        challenge = answer.headers["WWW-Authenticate"]
        assert challenge.startswith(
            'Bearer realm="shop", error="invalid_token", error_description="'
        )
        assert why in answer.json()["detail"]
        # The description is a quoted-string RFC 6750 allows: no quote, no backslash.
        description = challenge.split('error_description="', 1)[1][:-1]
        assert '"' not in description
        assert "\\" not in description


def test_the_rsa_key_as_hmac_secret_cannot_pass_even_if_hs256_were_listed() -> None:
    with pytest.raises(ValueError, match="HS256"):
        AuthSettings(jwt_algorithms=["RS256", "HS256"])
    with pytest.raises(ValueError, match="none"):
        AuthSettings(jwt_algorithms="none")
    assert AuthSettings(jwt_algorithms="RS256, ES256").jwt_algorithms == ["RS256", "ES256"]


async def test_leeway_admits_a_token_just_expired(keys: Keys, jwks_file: Path) -> None:
    async with CellClient(Shop, auth=settings_for(str(jwks_file), jwt_leeway=60)) as client:
        token = keys.token(exp=int(time.time()) - 10)
        assert (await client.get("/me", headers=bearer(token))).status == 200


async def test_a_proven_cell_needs_no_token_but_a_token_it_sends_is_checked(
    keys: Keys, jwks_file: Path
) -> None:
    async with CellClient(Shop, auth=settings_for(str(jwks_file)), caller="teller") as client:
        answer = await client.get("/me")
        assert answer.status == 200
        assert answer.json()["cell"] == "teller"
        forwarded = await client.get("/me", headers=bearer(keys.token(scope="s")))
        assert forwarded.json() == {
            "cell": "teller",
            "subject": "alice",
            "scheme": "jwt",
            "scope": "s",
        }
        expired = keys.token(exp=int(time.time()) - 3600)
        assert (await client.get("/me", headers=bearer(expired))).status == 401


class JwksServer:
    """A real HTTP server on loopback publishing a JWKS the test can change or break."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.failing = False
        self.redirect: str | None = None  # answer 302 to this URL instead
        self.padding = 0  # bytes of whitespace after the document
        self.hits = 0
        self.gate: asyncio.Event | None = None  # when set, answers wait for it
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            return web.Response(status=500, text="down")
        if self.redirect is not None:
            raise web.HTTPFound(self.redirect)
        if self.padding:
            text = json.dumps(self.document) + " " * self.padding
            return web.Response(text=text, content_type="application/json")
        return web.json_response(self.document)

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def jwks_server(keys: Keys) -> AsyncIterator[JwksServer]:
    async with JwksServer({"keys": list(keys.published)}) as server:
        yield server


async def test_a_jwks_url_is_fetched_once_cached_and_a_rotated_key_is_found_by_kid(
    keys: Keys, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwks_module, "MIN_REFETCH", 0.0)  # no 10 s wait between fetches here
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        answers = await asyncio.gather(
            *(client.get("/me", headers=bearer(keys.token())) for _ in range(20))
        )
        assert {a.status for a in answers} == {200}
        assert jwks_server.hits == 1  # concurrent first requests share one fetch
        # The issuer rotates: a new key, published under a new kid.
        new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks_server.document = {"keys": [*keys.published, keys.jwk(new, "rsa-2", "RS256")]}
        answer = await client.get("/me", headers=bearer(keys.token(new, kid="rsa-2")))
        assert answer.status == 200, answer.text
        assert jwks_server.hits == 2
        # Known kids cost no fetch.
        for _ in range(5):
            assert (await client.get("/me", headers=bearer(keys.token()))).status == 200
        assert jwks_server.hits == 2


async def test_requests_arriving_during_a_jwks_fetch_wait_for_it_with_the_real_refetch_gap(
    keys: Keys, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the real 10 s gap between fetches, the requests that arrived while the first
    # fetch ran were refused 503 (19 of 20 from outside), and those naming a rotated kid
    # while its fetch ran 401 "no key": the test above sets the gap to 0, which hid both.
    jwks_server.gate = asyncio.Event()
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        first = asyncio.create_task(client.get("/me", headers=bearer(keys.token())))
        while jwks_server.hits == 0:  # the first request's fetch has reached the server
            await asyncio.sleep(0.01)
        later = [
            asyncio.create_task(client.get("/me", headers=bearer(keys.token()))) for _ in range(19)
        ]
        await asyncio.sleep(0.2)  # let them arrive while the fetch is held
        jwks_server.gate.set()
        answers = await asyncio.gather(first, *later)
        assert [a.status for a in answers] == [200] * 20, [a.text for a in answers]
        assert jwks_server.hits == 1
    jwks_server.gate = None
    monkeypatch.setattr(jwks_module, "MIN_REFETCH", 0.2)
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        assert (await client.get("/me", headers=bearer(keys.token()))).status == 200
        new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks_server.document = {"keys": [*keys.published, keys.jwk(new, "rsa-3", "RS256")]}
        await asyncio.sleep(0.3)  # past the gap, so the unknown kid may fetch again
        answers = await asyncio.gather(
            *(client.get("/me", headers=bearer(keys.token(new, kid="rsa-3"))) for _ in range(20))
        )
        assert [a.status for a in answers] == [200] * 20, [a.text for a in answers]


async def test_while_the_jwks_url_fails_the_last_good_keys_are_used(
    keys: Keys, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwks_module, "MIN_REFETCH", 0.0)
    async with CellClient(Shop, auth=settings_for(jwks_server.url, jwks_refresh=1)) as client:
        assert (await client.get("/me", headers=bearer(keys.token()))).status == 200
        jwks_server.failing = True
        await asyncio.sleep(1.1)  # the cached set is due for a refresh
        answer = await client.get("/me", headers=bearer(keys.token()))
        assert answer.status == 200, answer.text
        assert jwks_server.hits >= 2  # it tried


async def test_an_unreachable_jwks_with_no_keys_yet_is_503_not_401(keys: Keys) -> None:
    settings = settings_for("http://127.0.0.1:9/jwks.json")  # the discard port: nothing listens
    async with CellClient(Shop, auth=settings) as client:
        answer = await client.get("/me", headers=bearer(keys.token()))
        assert answer.status == 503
        assert "could not be loaded" in answer.json()["detail"]


async def test_a_jwks_url_that_redirects_or_answers_too_much_loads_no_keys(
    keys: Keys, jwks_server: JwksServer
) -> None:
    # A redirect could lead off the https URL the settings allow; a body of megabytes is no
    # key set: neither is followed or read whole, and no key means 503, never a pass.
    jwks_server.redirect = jwks_server.url.replace("/.well-known/jwks.json", "/elsewhere")
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        assert (await client.get("/me", headers=bearer(keys.token()))).status == 503
    jwks_server.redirect = None
    jwks_server.padding = 2 << 20
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        assert (await client.get("/me", headers=bearer(keys.token()))).status == 503
    jwks_server.padding = 0
    async with CellClient(Shop, auth=settings_for(jwks_server.url)) as client:
        assert (await client.get("/me", headers=bearer(keys.token()))).status == 200


def test_a_jwks_over_plain_http_to_another_machine_is_refused() -> None:
    verifier = auth_module.TokenVerifier(settings_for("http://id.example/jwks.json"))
    with pytest.raises(ConfigurationError, match="use https://"):
        verifier.require(("jwt",), "service 'me'")


async def test_api_keys_from_a_file_of_names_and_digests(
    keys: Keys, tmp_path: Path, jwks_file: Path
) -> None:
    other = "o-" + "3" * 30
    path = tmp_path / "keys"
    path.write_text(
        f"# name = key, or name = sha256:<hex>\nbilling = {API_KEY}\n"
        f"reports = sha256:{hashlib.sha256(other.encode()).hexdigest()}\n"
    )
    settings = settings_for(str(jwks_file), api_keys_file=path, api_keys=None)
    async with CellClient(Shop, auth=settings) as client:
        for key, name in ((API_KEY, "billing"), (other, "reports")):
            answer = await client.get("/either", headers=bearer(key))
            assert answer.status == 200, answer.text
            assert answer.json()["subject"] == name
            assert answer.json()["scheme"] == "api-key"
        # Either scheme: a JWT too.
        assert (await client.get("/either", headers=bearer(keys.token()))).json()["scheme"] == "jwt"
        wrong = await client.get("/either", headers=bearer("k-" + "8" * 30))
        assert wrong.status == 401
        assert "not one of this cell's" in wrong.json()["detail"]
        # /me takes JWTs only: an API key is not one.
        assert (await client.get("/me", headers=bearer(API_KEY))).status == 401


def test_the_api_key_table_keeps_digests_only() -> None:
    table = auth_module.ApiKeys([("billing", API_KEY)], "test")
    assert API_KEY not in repr(vars(table))
    assert table.name_of(API_KEY) == "billing"
    assert table.name_of(API_KEY + "x") is None
    with pytest.raises(ConfigurationError, match="at least 16"):
        auth_module.ApiKeys([("short", "abc")], "test")


async def test_missing_auth_settings_fail_the_start_naming_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match=r"declares auth='jwt', but \[auth\] jwks"):
        async with CellClient(Shop, auth=AuthSettings()):
            pass


def test_a_bad_auth_declaration_is_refused_at_decoration() -> None:
    with pytest.raises(CellDefinitionError, match=r"Bad.x: auth='oauth' is not a token scheme"):

        @cell("bad-auth")
        class Bad:
            @service.get("/x", auth="oauth")
            async def x(self) -> None: ...

    with pytest.raises(CellDefinitionError, match=r"@cell\('bad-auth'\): auth='basic'"):
        cell("bad-auth", auth="basic")


API_CELL = """
from orchestro import Caller, cell, service

@cell("keyed", auth="api-key")
class Keyed:
    @service.get("/who")
    async def who(self, caller: Caller) -> dict:
        return {"subject": caller.subject}
"""


async def test_orchestro_run_reads_the_auth_section(
    tmp_path: Path, cli_processes: list[Any]
) -> None:
    import aiohttp

    (tmp_path / "keyed.py").write_text(API_CELL)
    (tmp_path / "keys").write_text(f"ci = {API_KEY}\n")
    (tmp_path / "orchestro.toml").write_text('[auth]\napi_keys_file = "keys"\n')
    cli = await start_cli("run", "keyed.py", "--port", "0", "--registry", "memory://", cwd=tmp_path)
    cli_processes.append(cli)
    url = (await cli.wait_serving())["keyed"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/who", headers=bearer(API_KEY)) as answer:
            assert answer.status == 200
            assert (await answer.json()) == {"subject": "ci"}
        async with session.get(f"{url}/who") as answer:
            assert answer.status == 401
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="keyed"'
    cli.signal()
    await cli.exits_with(0)


async def test_orchestro_run_without_auth_settings_says_what_to_set_in_one_line(
    tmp_path: Path,
) -> None:
    from tests.conftest import run_cli

    (tmp_path / "keyed.py").write_text(API_CELL)
    code, _, err = await run_cli(
        "run", "keyed.py", "--port", "0", "--registry", "memory://", cwd=tmp_path
    )
    assert code != 0
    assert "declares auth='api-key', but no API key is set: set [auth] api_keys_file" in err
    assert "Traceback" not in err


async def test_a_jwks_file_rewritten_with_a_new_key_is_read_again(
    keys: Keys, jwks_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwks_module, "MIN_REFETCH", 0.0)
    new = ec.generate_private_key(ec.SECP256R1())
    token = keys.token(new, kid="ec-2", alg="ES256")
    async with CellClient(Shop, auth=settings_for(str(jwks_file))) as client:
        before = await client.get("/me", headers=bearer(token))
        assert before.status == 401
        assert "no key 'ec-2' in the JWKS" in before.json()["detail"]
        # The issuer's sidecar writes the rotated set (a new file, renamed into place).
        rotated = jwks_file.with_suffix(".new")
        rotated.write_text(json.dumps({"keys": [*keys.published, keys.jwk(new, "ec-2", "ES256")]}))
        rotated.replace(jwks_file)
        after = await client.get("/me", headers=bearer(token))
        assert after.status == 200, after.text
        assert after.json()["subject"] == "alice"


def test_a_verified_token_is_remembered_until_its_exp_or_a_new_jwks(
    keys: Keys, jwks_file: Path
) -> None:
    wall = [time.time()]
    verifier = auth_module.TokenVerifier(settings_for(str(jwks_file)), now=lambda: wall[0])
    verifier.require(("jwt",), "test")
    token = keys.token(exp=int(wall[0]) + 60)
    assert verifier.cached(token) is None
    caller = verifier.verify(token, ("jwt",))
    assert verifier.cached(token) is caller
    wall[0] += 60 + 30  # past exp and the 30 s leeway
    assert verifier.cached(token) is None
    wall[0] -= 90
    verifier.verify(token, ("jwt",))
    assert verifier.jwks is not None
    jwks_file.write_text(json.dumps({"keys": keys.published[:1]}))
    verifier.jwks._read_file()  # a new set (as a refresh loads it)
    assert verifier.cached(token) is None
