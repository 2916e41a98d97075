from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from orchestro.registry import Registry, open_registry
from orchestro.registry.memory import MemoryRegistry

from ..servers import Etcd


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Etcd]:
    """One real etcd for the session; tests isolate themselves by key prefix."""
    server = Etcd()
    server.start()
    yield server
    server.close()


Opener = Callable[..., Registry]


@pytest.fixture(params=["memory", "local", "etcd"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens clients of one shared store of the parametrised backend (two clients stand for
    two processes; memory:// has a single client)."""
    opened: list[Registry] = []
    kind = request.param
    if kind == "memory":
        shared: dict[float, MemoryRegistry] = {}

        def open_memory(ttl: float = 2.0) -> Registry:
            return shared.setdefault(ttl, MemoryRegistry(ttl=ttl))

        factory: Opener = open_memory
    elif kind == "local":
        url = f"local://{tmp_path / 'registry.db'}"
        factory = lambda ttl=2.0: open_registry(url, ttl=ttl)  # noqa: E731
    else:
        server: Etcd = request.getfixturevalue("etcd_server")
        url = f"{server.url}/t{os.urandom(4).hex()}"
        factory = lambda ttl=2.0: open_registry(url, ttl=ttl)  # noqa: E731

    def tracked(ttl: float = 2.0) -> Registry:
        registry = factory(ttl)
        if registry not in opened:
            opened.append(registry)
        return registry

    yield tracked
    for registry in opened:
        await registry.aclose()
