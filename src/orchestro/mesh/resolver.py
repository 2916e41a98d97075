"""Which instances a call may go to: the registry view's ready instances of a cell (or the
one address of a URL target), not marked draining, nearest first (this host, then this zone).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from ..errors import NoInstancesError
from ..registry import Instance, RegistryView
from .policy import CallPolicy
from .target import Target

__all__ = ["Resolver"]


class Resolver:
    """Resolution for one process's mesh (shared by its bindings)."""

    __slots__ = ("external", "hostname", "view", "zone")

    def __init__(self, view: RegistryView, zone: str | None) -> None:
        self.view = view
        self.zone = zone
        self.hostname = socket.gethostname()
        # URL targets: a synthetic cell (named by the URL) holding that one address.
        self.external: dict[str, tuple[Instance, ...]] = {}

    def name_of(self, target: str) -> str:
        """A cell name, or for a URL a synthetic cell holding that one address."""
        if "://" not in target:
            return target
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"mesh.client({target!r}): use a cell name or an http(s) URL")
        name = target.rstrip("/")
        if name not in self.external:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self.external[name] = (
                Instance(
                    cell=parts.hostname[:63],
                    id=name,
                    scheme=parts.scheme,
                    host=parts.hostname,
                    port=port,
                ),
            )
        return name

    def resolve(self, cell: str) -> tuple[Instance, ...]:
        """Ready instances of ``cell``, those on this host first, then this zone."""
        return self.nearest(self.external.get(cell) or self.view.ready(cell))

    def nearest(self, found: tuple[Instance, ...]) -> tuple[Instance, ...]:
        """Of ``found``, those on this host if any, else those in this zone if any."""
        if len(found) > 1:
            here = tuple(i for i in found if i.hostname == self.hostname)
            if here:
                return here
            if self.zone is not None:
                zone = tuple(i for i in found if i.labels.get("zone") == self.zone)
                if zone:
                    return zone
        return found

    def candidates(self, cell: str, target: Target, now: float) -> tuple[Instance, ...]:
        """The instances of ``cell`` a call may choose from: ready (or the URL's), not marked
        draining (unless all are), nearest first. Notes a change of the view on the way."""
        instances = self.external.get(cell) or self.view.ready(cell)
        if instances is not target.viewed:
            # The view changed (its tuples are replaced, never mutated): forget the instances
            # that left it (draining ones stay until they are gone).
            if target.viewed is not None and cell not in self.external:
                target.forget({i.id for i in self.view.instances(cell)})
            target.viewed = instances
        if target.draining:
            instances = target.skip_draining(instances, now)
        return self.nearest(instances)

    def none_found(self, cell: str, policy: CallPolicy, waited: float) -> NoInstancesError:
        """What a call that found no instance of ``cell`` tells a person: where it looked,
        how long it waited, and what to check."""
        where = (
            f"in registry {self.view.registry.url}"
            if cell not in self.external
            else "among its URLs"
        )
        return NoInstancesError(
            f"no ready instance of cell {cell!r} {where} after waiting {waited:.1f} s "
            f"(wait_for_instances {policy.wait_for_instances:g} s); is it running, with the "
            "same registry? `python -m orchestro ls` lists the instances the registry knows",
            cell=cell,
        )
