"""Ingress limits over real sockets: a slowloris holding hundreds of sockets does not starve
a normal client and its sockets are closed; slow bodies, large or many headers, too many
connections and idle keep-alives each get the right answer or a close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import aiohttp
from pydantic import BaseModel

from orchestro import cell, service
from orchestro.config import GatewaySettings
from orchestro.testing import CellClient


class Note(BaseModel):
    text: str


@cell("ingress")
class Ingress:
    @service.get("/greet")
    async def greet(self) -> Note:
        return Note(text="hello")

    @service.post("/notes")
    async def add(self, note: Note) -> Note:
        return note


def address(client: CellClient) -> tuple[str, int]:
    host, port = client.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def answer_of(reader: asyncio.StreamReader) -> tuple[int | None, dict[str, str], bytes]:
    """Everything the server sends until it closes: (status or None if nothing), headers,
    body."""
    async with asyncio.timeout(30):  # a hang guard, not a measurement
        data = await reader.read()
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def send(client: CellClient, data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(*address(client))
    try:
        writer.write(data)
        await writer.drain()
        return await answer_of(reader)
    finally:
        writer.close()


async def test_a_slowloris_does_not_starve_a_normal_client_and_its_sockets_are_closed() -> None:
    settings = GatewaySettings(header_timeout=3.0)
    sockets = 300
    async with CellClient(Ingress, settings=settings) as client:
        host, port = address(client)
        opened = [await asyncio.open_connection(host, port) for _ in range(sockets)]
        stop = asyncio.Event()

        async def trickle(writer: asyncio.StreamWriter) -> None:
            # A request head that never ends: one more header line every 0.2 s.
            with contextlib.suppress(ConnectionError):
                writer.write(b"GET /greet HTTP/1.1\r\nHost: t\r\n")
                n = 0
                while not stop.is_set() and not writer.is_closing():
                    n += 1
                    writer.write(b"X-%d: y\r\n" % n)
                    await writer.drain()
                    await asyncio.sleep(0.2)

        trickling = [asyncio.create_task(trickle(w)) for _, w in opened]
        answers = [asyncio.create_task(answer_of(r)) for r, _ in opened]
        # While the slow sockets are held, a normal client is answered, request after request.
        held = []
        async with aiohttp.ClientSession() as session:
            for _ in range(40):
                async with session.get(f"{client.url}/greet") as answer:
                    assert answer.status == 200
                    assert (await answer.json()) == {"text": "hello"}
                held.append(sum(not a.done() for a in answers))
        assert held[0] == sockets  # the first answer came with every slow socket still open
        # The slow sockets are closed at their header timeout, each told why.
        results = await asyncio.gather(*answers)
        stop.set()
        await asyncio.gather(*trickling)
        for _, writer in opened:
            writer.close()
        statuses = [status for status, _, _ in results]
        assert statuses == [408] * sockets
        problem = json.loads(results[0][2])
        assert problem["status"] == 408
        assert "did not arrive within 3 s" in problem["detail"]
        metrics = (await client.get("/metrics")).text
    (sample,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("orchestro_gateway_malformed_requests_total{")
        and 'http_response_status_code="408"' in line
    ]
    assert sample.endswith(f" {float(sockets)}")


async def test_a_socket_that_sends_nothing_is_closed_at_the_header_timeout() -> None:
    async with CellClient(Ingress, settings=GatewaySettings(header_timeout=0.5)) as client:
        reader, writer = await asyncio.open_connection(*address(client))
        status, _, _ = await answer_of(reader)  # EOF: nothing to answer, closed
        writer.close()
        assert status is None


async def test_a_slow_body_gets_408_and_the_connection_closes() -> None:
    # A header timeout longer than answer_of's hang guard: the body timeout, shorter, must
    # answer on its own (it used to wait for what was left of the header timeout).
    settings = GatewaySettings(body_timeout=0.5, min_body_rate=1_000_000, header_timeout=60)
    async with CellClient(Ingress, settings=settings) as client:
        reader, writer = await asyncio.open_connection(*address(client))
        writer.write(
            b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"text": "'
        )
        await writer.drain()  # ... and the other 90 bytes never come
        status, headers, body = await answer_of(reader)
        writer.close()
        assert status == 408
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert "body did not arrive within 0.5 s" in json.loads(body)["detail"]
        # A body that arrives in time is served as ever.
        answer = await client.post("/notes", json={"text": "on time"})
        assert answer.status == 200


async def test_a_body_trickled_fast_enough_is_not_cut() -> None:
    settings = GatewaySettings(body_timeout=0.6, min_body_rate=10)  # +0.1 s per byte
    async with CellClient(Ingress, settings=settings) as client:
        reader, writer = await asyncio.open_connection(*address(client))
        payload = b'{"text": "slow but steady"}'
        writer.write(
            b"POST /notes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
        )
        for i in range(0, len(payload), 4):  # 4 bytes (0.4 s of credit) every 0.3 s
            writer.write(payload[i : i + 4])
            await writer.drain()
            await asyncio.sleep(0.3)
        status, _, body = await answer_of(reader)
        writer.close()
        assert status == 200
        assert json.loads(body) == {"text": "slow but steady"}


def head(*lines: bytes) -> bytes:
    return b"GET /greet HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + b"".join(lines) + b"\r\n"


async def test_headers_too_large_or_too_many_get_431() -> None:
    settings = GatewaySettings(max_header_size=4096, max_header_count=20)
    async with CellClient(Ingress, settings=settings) as client:
        # Many lines, each short, together over max_header_size (sent in pieces).
        reader, writer = await asyncio.open_connection(*address(client))
        writer.write(b"GET /greet HTTP/1.1\r\nHost: t\r\n")
        for i in range(10):
            writer.write(b"X-%d: %s\r\n" % (i, b"v" * 600))
            await writer.drain()
        status, headers, body = await answer_of(reader)
        writer.close()
        assert status == 431
        assert headers["content-type"] == "application/problem+json"
        assert "exceed 4096 bytes" in json.loads(body)["detail"]
        # One line over 8190 bytes.
        status, _, _ = await send(client, head(b"X-Big: " + b"v" * 9000 + b"\r\n"))
        assert status == 431
        # More than max_header_count fields.
        status, _, body = await send(client, head(*(b"X-%d: v\r\n" % i for i in range(30))))
        assert status == 431
        assert json.loads(body)["status"] == 431
        # Within every limit: served.
        status, _, _ = await send(client, head(*(b"X-%d: v\r\n" % i for i in range(10))))
        assert status == 200


async def test_a_head_over_max_header_size_in_one_write_gets_431() -> None:
    # The head arriving whole in one read used to be parsed and served: the size was
    # checked only while the head was still incomplete (80 KB passed a 32 KiB limit).
    settings = GatewaySettings(max_header_size=4096)
    async with CellClient(Ingress, settings=settings) as client:
        large = head(*(b"X-%d: %s\r\n" % (i, b"v" * 600) for i in range(10)))
        status, _, body = await send(client, large)
        assert status == 431
        assert "exceed 4096 bytes" in json.loads(body)["detail"]
        # A small head with a large body in the same write is within the limit: served.
        note = json.dumps({"text": "n" * 8000}).encode()
        post = (
            b"POST /notes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(note)
        )
        status, _, body = await send(client, post + note)
        assert status == 200, body
        # Pipelined in one write: the small request is served, the large one refused.
        small = b"GET /greet HTTP/1.1\r\nHost: t\r\n\r\n"
        reader, writer = await asyncio.open_connection(*address(client))
        writer.write(small + large)
        async with asyncio.timeout(30):  # a hang guard, not a measurement
            data = await reader.read()
        writer.close()
        statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)
        assert statuses == [b"200", b"431"], data


async def test_one_connection_over_max_connections_gets_503_and_a_close() -> None:
    settings = GatewaySettings(max_connections=5, header_timeout=60)
    async with CellClient(Ingress, settings=settings) as client:
        host, port = address(client)
        # The test client's own pooled connection may hold one slot: fill the rest.
        async with aiohttp.ClientSession() as probe, probe.get(f"{client.url}/greet") as answer:
            assert answer.status == 200
        held = []
        refused = None
        for _ in range(8):
            reader, writer = await asyncio.open_connection(host, port)
            held.append(writer)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    data = await reader.read(4096)
                    if data:
                        refused = data
                        break
        assert refused is not None, "no connection was refused"
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1\r\n" in refused
        assert b"limit of 5 open connections" in refused
        for writer in held:
            writer.close()
        await asyncio.sleep(0.1)  # the server sees the closes
        status, _, _ = await send(client, head())
        assert status == 200


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() -> None:
    async with CellClient(Ingress, settings=GatewaySettings(keepalive_timeout=0.5)) as client:
        reader, writer = await asyncio.open_connection(*address(client))
        writer.write(b"GET /greet HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        first = await reader.readuntil(b'"hello"}')
        assert first.startswith(b"HTTP/1.1 200")
        async with asyncio.timeout(30):
            rest = await reader.read()  # EOF once idle for keepalive_timeout
        writer.close()
        assert rest == b""
