"""Load balancers: one protocol, one module each, chosen per client by name.

- ``p2c`` (default): of two instances drawn at random, the one with the lower peak-EWMA
  latency * (requests in flight + 1) (Finagle, Linkerd);
- ``round-robin``: each in turn;
- ``least-in-flight``: the fewest requests in flight;
- ``hash``: consistent hash of the call's key (a ring with virtual nodes).
"""

from __future__ import annotations

import importlib
from typing import Final

from ...errors import ConfigurationError
from .base import Balancer, EndpointStats

__all__ = ["BALANCERS", "Balancer", "EndpointStats", "make_balancer"]

BALANCERS: Final = {
    "p2c": "orchestro.mesh.balancers.p2c:PeakEwmaP2C",
    "round-robin": "orchestro.mesh.balancers.round_robin:RoundRobin",
    "least-in-flight": "orchestro.mesh.balancers.least_in_flight:LeastInFlight",
    "hash": "orchestro.mesh.balancers.hashring:ConsistentHash",
}


def make_balancer(name: str) -> Balancer:
    target = BALANCERS.get(name)
    if target is None:
        raise ConfigurationError(
            f"unknown balancer {name!r}: use one of {', '.join(sorted(BALANCERS))}"
        )
    module, _, cls = target.partition(":")
    balancer: Balancer = getattr(importlib.import_module(module), cls)()
    return balancer
