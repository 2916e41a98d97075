"""The steps of a cell's start and stop, run one after another whatever the others do."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["Step", "describe", "each", "now", "this_machine"]

Step = tuple[str, Callable[[], Awaitable[None]]]


async def this_machine() -> str:
    """An address of this machine for other machines, when listening on all addresses
    (resolved through the loop, which never blocks it)."""
    name = socket.gethostname()
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
    except OSError:
        return name
    return str(found[0][4][0]) if found else name


async def now(function: Callable[..., object], *args: Any) -> None:
    function(*args)


async def each(
    cell: str,
    steps: Sequence[Step],
    log: logging.LoggerAdapter[logging.Logger],
    *,
    raise_first: bool = False,
) -> None:
    """Run every step in order, whatever the others do (each is called when its turn comes,
    so a deadline's time left is read then); log each failure."""
    first: BaseException | None = None
    for name, step in steps:
        try:
            await step()
        except Exception as exc:
            log.error("cell %s: %s failed while stopping: %r", cell, name, exc, exc_info=exc)
            first = first or exc
    if first is not None and raise_first:
        raise first


def describe(exc: BaseException) -> str:
    """``ValueError: boom (at app.py:12)`` — the error and where in user code it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
