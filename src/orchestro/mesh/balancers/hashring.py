"""Consistent hashing on a key: a ring with virtual nodes.

Each instance owns ``replicas`` points on a 64-bit ring; a key goes to the first point at or
after its hash. When an instance joins or leaves only the keys of its arcs move (about 1/n of
them). Calls without a key fall back to the key-less choice of the first instance's arc.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from .base import EndpointStats

__all__ = ["ConsistentHash"]


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    def __init__(self, replicas: int = 100) -> None:
        self.replicas = replicas
        self._members: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []

    def _rebuild(self, ids: tuple[str, ...]) -> None:
        ring = sorted((_hash(f"{iid}#{n}"), iid) for iid in ids for n in range(self.replicas))
        self._points = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]
        self._members = ids

    def pick(
        self, endpoints: Sequence[EndpointStats], key: str | None, now: float
    ) -> EndpointStats:
        ids = tuple(sorted(e.id for e in endpoints))
        if ids != self._members:
            self._rebuild(ids)
        index = bisect.bisect_left(self._points, _hash(key or ""))
        owner = self._owners[index % len(self._owners)]
        return next(e for e in endpoints if e.id == owner)
