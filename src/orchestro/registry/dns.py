"""``dns://[SERVER[:PORT]]/cell=host[:port],...``: instances from DNS, e.g. a Kubernetes
headless Service's records, which list the ready pods themselves.

For each ``cell=host`` entry the addresses are ``host``'s A and AAAA records and the port is
the SRV record ``_http._tcp.host``'s (or the entry's ``:port`` when there is no SRV record);
the mesh listener's port (mutual TLS) is the SRV record ``_mesh._tcp.host``'s — a Kubernetes
Service port named ``mesh`` — and none when it has none.
Records are resolved again after the shortest TTL of the answers, never later than
``?interval=`` seconds (default 5) nor sooner than a second (or the interval, if shorter).
A name that does not exist (NXDOMAIN) has no instances; a resolver that fails (timeout, no
answer from any server, SERVFAIL) keeps the cell's last good answer, so an outage of DNS does
not empty the mesh. Registration is accepted and ignored: DNS is what the cluster says.

```text
dns:///orders=orders-peers.shop.svc.cluster.local,payments=payments-peers.shop.svc.cluster.local
dns://127.0.0.1:5353/stock=stock.test:8080?interval=1
```

Needs ``dnspython`` (a dependency of orchestro), imported only when ``dns://`` is used.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigurationError
from .base import Instance, ReadOnlyRegistry

try:
    import dns.asyncresolver
    import dns.exception
    import dns.rdatatype
    import dns.resolver
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "registry dns://: dnspython is not installed (a dependency of orchestro); "
        "pip install 'dnspython>=2.6'"
    ) from exc

__all__ = ["DnsRegistry"]

_log = logging.getLogger("orchestro.registry.dns")
DEFAULT_INTERVAL = 5.0
_TIMEOUT = 2.0  # per lookup: a resolver slower than this counts as failed


@dataclass(frozen=True, slots=True)
class _Entry:
    cell: str
    host: str
    port: int | None


class DnsRegistry(ReadOnlyRegistry):
    def __init__(
        self,
        url: str,
        entries: Sequence[_Entry],
        *,
        nameserver: tuple[str, int] | None = None,
        interval: float = DEFAULT_INTERVAL,
        ttl: float = 5.0,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.interval = interval
        self._entries = list(entries)
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = _TIMEOUT
        self._by_cell: dict[str, tuple[Instance, ...]] = {}
        self._first_seen: dict[str, float] = {}
        self.stale: set[str] = set()  # cells whose last lookup failed (last good answer kept)
        self._next = 0.0  # monotonic time of the next resolution
        self.delay = interval  # seconds from the last resolution to the next
        self._closed = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, *, ttl: float) -> DnsRegistry:
        parts = urlsplit(url)
        nameserver = None
        if parts.hostname:
            try:
                nameserver = (parts.hostname, parts.port or 53)
            except ValueError as exc:
                raise ConfigurationError(f"registry URL {url!r}: {exc}") from None
        entries = []
        for entry in filter(None, unquote(parts.path.lstrip("/")).split(",")):
            cell, sep, target = entry.partition("=")
            host, _, port = target.partition(":")
            if not sep or not cell or not host or (port and not port.isdigit()):
                raise ConfigurationError(
                    f"registry URL {url!r}: {entry!r} is not cell=host[:port]; write e.g. "
                    "dns:///orders=orders-peers.shop.svc.cluster.local"
                )
            entries.append(_Entry(cell, host.rstrip("."), int(port) if port else None))
        query = parse_qs(parts.query)
        try:
            interval = float(query.get("interval", [DEFAULT_INTERVAL])[0])
        except ValueError:
            interval = -1.0
        if not interval > 0:
            raise ConfigurationError(f"registry URL {url!r}: interval= must be seconds > 0")
        return cls(url, entries, nameserver=nameserver, interval=interval, ttl=ttl)

    async def list(self) -> Sequence[Instance]:
        """Every instance, resolved again if the answers are due."""
        if time.monotonic() >= self._next:
            await self.refresh()
        return self._snapshot()

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        """The instances now, then whenever a resolution changes them."""
        await self.refresh()
        last = self._snapshot()
        yield last
        while not self._closed.is_set():
            delay = max(0.0, self._next - time.monotonic())
            try:
                async with asyncio.timeout(delay):
                    await self._closed.wait()
                return
            except TimeoutError:
                pass
            await self.refresh()
            now = self._snapshot()
            if [i.id for i in now] != [i.id for i in last]:  # ids hold address and port
                last = now
                yield now

    async def refresh(self) -> None:
        """Resolve every entry once; schedule the next resolution from the TTLs."""
        results = await asyncio.gather(*(self._resolve(e) for e in self._entries))
        ttls = [ttl for _, ttl in results if ttl is not None]
        floor = min(1.0, self.interval)
        shortest = min(ttls, default=self.interval)
        self.delay = min(self.interval, max(float(shortest), floor))
        self._next = time.monotonic() + self.delay
        for entry, (found, _) in zip(self._entries, results, strict=True):
            if found is None:
                if entry.cell not in self.stale:
                    _log.warning(
                        "registry %s: cannot resolve %s; keeping its last %d instance(s)",
                        self.url,
                        entry.host,
                        len(self._by_cell.get(entry.cell, ())),
                    )
                self.stale.add(entry.cell)
                continue
            self.stale.discard(entry.cell)
            self._by_cell[entry.cell] = found
        # Only the instances held now keep a start time: pods come and go with new addresses,
        # and one remembered per address ever seen would grow without bound.
        self._first_seen = {i.id: i.started_at for cell in self._by_cell.values() for i in cell}

    def _snapshot(self) -> Sequence[Instance]:
        return [i for cell in self._by_cell.values() for i in cell]

    async def _resolve(self, entry: _Entry) -> tuple[tuple[Instance, ...] | None, int | None]:
        """The entry's instances and the shortest TTL; ``None`` instances when resolving
        failed (as opposed to the name having no records)."""
        ttls: builtins.list[int] = []
        port = entry.port
        addresses: builtins.list[str] = []
        try:
            srv = await self._lookup(f"_http._tcp.{entry.host}", "SRV")
            if srv is not None:
                ttls.append(srv.rrset.ttl if srv.rrset is not None else 0)
                ports = sorted({int(r.port) for r in srv})
                port = ports[0] if ports else port
            mesh = await self._lookup(f"_mesh._tcp.{entry.host}", "SRV")
            mesh_port = 0
            if mesh is not None:
                ttls.append(mesh.rrset.ttl if mesh.rrset is not None else 0)
                mesh_ports = sorted({int(r.port) for r in mesh})
                mesh_port = mesh_ports[0] if mesh_ports else 0
            for kind in ("A", "AAAA"):
                answer = await self._lookup(entry.host, kind)
                if answer is not None:
                    ttls.append(answer.rrset.ttl if answer.rrset is not None else 0)
                    addresses.extend(r.address for r in answer)
        except (dns.exception.DNSException, OSError):  # timeouts, SERVFAIL, unreachable
            return None, None
        if addresses and port is None:
            _log.warning(
                "registry %s: %s has addresses but no SRV record _http._tcp.%s: give the port "
                "in the URL (%s=%s:PORT)",
                self.url,
                entry.host,
                entry.host,
                entry.cell,
                entry.host,
            )
            return (), min(ttls, default=None)
        return tuple(
            self._instance(entry, a, port, mesh_port) for a in sorted(addresses) if port
        ), min(ttls, default=None)

    async def _lookup(self, name: str, kind: str) -> dns.resolver.Answer | None:
        """The answer, or ``None`` when the name or the record type does not exist."""
        try:
            return await self._resolver.resolve(name, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None

    def _instance(self, entry: _Entry, address: str, port: int, mesh_port: int = 0) -> Instance:
        key = f"{entry.cell}-dns-{address}:{port}"
        # Stable ids and start times: the mesh keeps its per-instance state across lookups.
        started = self._first_seen.setdefault(key, time.time())
        return Instance(
            cell=entry.cell,
            id=key,
            host=address,
            port=port,
            mesh_port=mesh_port,
            hostname=entry.host,
            started_at=started,
        )

    async def aclose(self) -> None:
        self._closed.set()
