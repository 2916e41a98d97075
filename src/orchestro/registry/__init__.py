"""Discovery: where cells register their instances and find each other's.

Backends are chosen by URL and imported only when chosen:

| URL | backend |
| --- | --- |
| ``local://[PATH]`` (default) | one SQLite file per machine, shared by every orchestro process |
| ``etcd://host:port[,host:port]`` | etcd v3, for many machines |
| ``memory://`` | one process |
| ``static://name=http://host:port,...`` | fixed addresses |
| ``dns://[SERVER:PORT]/cell=host[:port],...`` | DNS records (a headless Service's A/AAAA + SRV) |
"""

from __future__ import annotations

import importlib
from typing import Final

from ..errors import ConfigurationError
from .agent import Registration
from .base import Instance, InstanceState, LeaseLost, Registry, new_instance_id
from .view import RegistryView

__all__ = [
    "BACKENDS",
    "Instance",
    "InstanceState",
    "LeaseLost",
    "Registration",
    "Registry",
    "RegistryView",
    "new_instance_id",
    "open_registry",
]

BACKENDS: Final = {
    "local": "orchestro.registry.local:LocalRegistry",
    "etcd": "orchestro.registry.etcd:EtcdRegistry",
    "memory": "orchestro.registry.memory:MemoryRegistry",
    "static": "orchestro.registry.static:StaticRegistry",
    "dns": "orchestro.registry.dns:DnsRegistry",
}


def open_registry(url: str, *, ttl: float = 5.0) -> Registry:
    """The registry client for ``url`` (see the table above)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"registry URL {url!r} has no scheme: use local://, etcd://host:2379, memory:// "
            "or static://name=http://host:port"
        )
    target = BACKENDS.get(scheme.lower())
    if target is None:
        raise ConfigurationError(
            f"registry URL {url!r}: unknown scheme {scheme!r}; use one of "
            f"{', '.join(s + '://' for s in BACKENDS)}"
        )
    module_name, _, class_name = target.partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    registry: Registry = backend.from_url(url, ttl=ttl)
    return registry
