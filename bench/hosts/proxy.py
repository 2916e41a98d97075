"""A small asyncio TCP proxy that adds latency and resets connections (``tc netem`` does not
exist on this kernel). Run inside a host: ``python -m bench.hosts.proxy LISTEN TARGET MODE``.

``MODE`` is a JSON file ``{"delay": seconds, "reset": share}``, re-read on SIGHUP: every chunk
forwarded in either direction waits ``delay`` first (so a request/response pays it twice
over, once each way: ``delay`` is half the added round trip), and each new connection is
reset (RST, SO_LINGER 0) with probability ``reset`` after its first chunk.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import struct
import sys
from pathlib import Path


class Mode:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.delay = 0.0
        self.reset = 0.0
        self.load()

    def load(self) -> None:
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.delay = float(data.get("delay", 0.0))
        self.reset = float(data.get("reset", 0.0))
        # Tell the bed the mode is in force (it waits for this file to match).
        self.path.with_suffix(".applied").write_text(json.dumps(data))


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(
    mode: Mode,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    doomed: bool,
    others: list[asyncio.StreamWriter],
) -> None:
    try:
        while data := await reader.read(65536):
            if mode.delay:
                await asyncio.sleep(mode.delay)
            if doomed:
                for other in others:
                    _rst(other)
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listen: str, target: str, mode: Mode) -> None:
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(thost, int(tport))
        except OSError:
            _rst(client_w)
            return
        doomed = random.random() < mode.reset
        both = [client_w, server_w]
        await asyncio.gather(
            _pipe(mode, client_r, server_w, doomed, both),
            _pipe(mode, server_r, client_w, False, both),
        )

    server = await asyncio.start_server(handle, lhost, int(lport), reuse_address=True)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, mode.load)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    listen, target, mode_file = sys.argv[1:4]
    asyncio.run(serve(listen, target, Mode(Path(mode_file))))


if __name__ == "__main__":
    main()
