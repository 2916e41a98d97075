from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from orchestro.security.ca import DevelopmentCA
from orchestro.security.public_tls import PublicTLS
from orchestro.security.spiffe import IdentityError


async def served_serial(port: int, browser: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is served with."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=browser)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_public_port_reloads_the_users_certificate_in_place(
    ca: DevelopmentCA, tmp_path: Path
) -> None:
    first = ca.issue("site")
    cert, key, _ = first.write(tmp_path)
    public = PublicTLS(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=public.context).start()
        port = runner.addresses[0][1]
        # A browser: trusts the CA, has no client certificate.
        browser = ssl.create_default_context(cadata=ca.cert.public_bytes(Encoding.PEM).decode())
        browser.check_hostname = False  # the test certificate names a cell, not 127.0.0.1
        assert await served_serial(port, browser) == first.leaf.serial_number
        assert not public.refresh()  # unchanged files: nothing loaded

        renewed = ca.issue("site")
        renewed.write(tmp_path)
        assert public.refresh()
        assert await served_serial(port, browser) == renewed.leaf.serial_number
    finally:
        await runner.cleanup()


async def test_a_mismatched_pair_keeps_serving_the_old_one(
    ca: DevelopmentCA, tmp_path: Path
) -> None:
    first = ca.issue("site")
    cert, key, _ = first.write(tmp_path)
    public = PublicTLS(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=public.context).start()
        port = runner.addresses[0][1]
        browser = ssl.create_default_context(cadata=ca.cert.public_bytes(Encoding.PEM).decode())
        browser.check_hostname = False
        # Half written: the new certificate is in place, its key not yet.
        renewed = ca.issue("site")
        renewed_dir = tmp_path / "renewed"
        renewed_dir.mkdir()
        new_cert, new_key, _ = renewed.write(renewed_dir)
        cert.write_bytes(new_cert.read_bytes())
        assert not public.refresh()
        assert await served_serial(port, browser) == first.leaf.serial_number
        # The key follows: new handshakes get the new pair.
        key.write_bytes(new_key.read_bytes())
        assert public.refresh()
        assert await served_serial(port, browser) == renewed.leaf.serial_number
    finally:
        await runner.cleanup()


def test_a_public_pair_that_does_not_load_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("junk")
    (tmp_path / "k.pem").write_text("junk")
    with pytest.raises(IdentityError, match="cannot load them"):
        PublicTLS(tmp_path / "c.pem", tmp_path / "k.pem")
