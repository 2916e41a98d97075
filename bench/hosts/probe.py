"""Probes that run inside a host's namespace, in a thread of this process.

A network namespace is per thread (``setns(2)``), and a socket stays in the namespace it was
made in: a short-lived thread enters the host, does the probe and ends. The probes are what
proves a fault is in effect (a drop seen, a delay measured), so each reports what it saw
rather than a boolean it was told.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .net import connect_state

if TYPE_CHECKING:
    from .net import Host

__all__ = ["connect_loss", "http_get", "in_netns", "tcp_state"]

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(host: Host, fn: Callable[[], T]) -> T:
    """``fn()`` called in a new thread inside ``host``'s network namespace."""
    result: list[T] = []
    error: list[BaseException] = []

    def enter() -> None:
        fd = os.open(f"/var/run/netns/{host.netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {host.netns} failed")
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=enter, name=f"probe-{host.name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def tcp_state(host: Host, address: str, port: int, timeout: float) -> str:
    """From ``host``: ``open``, ``refused`` (an RST came back), ``timeout`` (no answer: the
    packets are dropped) or ``unreachable``."""

    def probe() -> str:
        return connect_state(address, port, timeout)

    return in_netns(host, probe)


def http_get(host: Host, url: str, timeout: float) -> tuple[int, float, bytes]:
    """From ``host``: GET ``url`` on a new connection; (status, seconds, body), status 0 when
    it did not answer within ``timeout``."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    address, _, port = hostport.partition(":")

    def probe() -> tuple[int, float, bytes]:
        started = time.monotonic()
        conn = http.client.HTTPConnection(address, int(port or 80), timeout=timeout)
        try:
            conn.request("GET", "/" + path)
            response = conn.getresponse()
            body = response.read()
            return response.status, time.monotonic() - started, body
        except (OSError, http.client.HTTPException):
            return 0, time.monotonic() - started, b""
        finally:
            conn.close()

    return in_netns(host, probe)


def connect_loss(host: Host, address: str, count: int = 100, wait: float = 0.1) -> float:
    """From ``host``: the share of ``count`` TCP connects to a closed port of ``address`` that
    got no answer within ``wait`` (the SYN or its RST dropped). On a bridge an RST comes back
    in well under a millisecond, and TCP resends a SYN only after 1 s: a connect that times out
    here was dropped. (ICMP answers would be rate-limited by the kernel; RSTs are not.)"""

    def probe() -> float:
        lost = 0
        for _ in range(count):
            with socket.socket() as sock:
                sock.settimeout(wait)
                try:
                    sock.connect((address, 9))
                except ConnectionRefusedError:
                    pass
                except OSError:
                    lost += 1
                else:
                    raise RuntimeError(
                        f"{address}:9 accepted a connection; the probe needs it closed"
                    )
        return lost / count

    return in_netns(host, probe)
