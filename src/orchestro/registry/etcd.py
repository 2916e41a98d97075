"""``etcd://host:port[,host:port][/prefix]``: etcd v3 for cells on many machines.

Spoken through etcd's v3 JSON gateway with the aiohttp client orchestro already depends on
(see ``docs/architecture.md`` for why not a gRPC client). One lease per process carries all
its instances: keys ``<prefix>/instances/<cell>/<instance id>`` hold the JSON record and
disappear when the lease expires — a process killed with SIGKILL vanishes within its TTL.
Watchers read the prefix once, then follow a watch stream from the next revision.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import ValidationError

from ..errors import ConfigurationError, DiscoveryError
from .base import Instance, LeaseLost

__all__ = ["EtcdRegistry"]

_log = logging.getLogger("orchestro.registry")


def _b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()


def _unb64(value: str) -> bytes:
    return base64.b64decode(value)


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # the range [prefix, prefix with its last byte + 1) is every key under it
    return _b64(bytes(raw))


class EtcdRegistry:
    """A registry in etcd v3, for many machines."""

    def __init__(
        self, endpoints: Sequence[str], *, ttl: float = 5.0, url: str, prefix: str = "/orchestro"
    ) -> None:
        self.url = url
        self.ttl = ttl
        self._endpoints = list(endpoints)
        self._prefix = prefix.rstrip("/") + "/instances/"
        self._session: aiohttp.ClientSession | None = None
        self._lease: str | None = None
        self._mine: dict[str, str] = {}  # instance id -> key
        self._warned: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, ttl: float) -> EtcdRegistry:
        rest = url.split("://", 1)[1]
        hosts, _, path = rest.partition("/")
        endpoints = []
        for host in filter(None, hosts.split(",")):
            parts = urlsplit(f"http://{host}")
            try:
                port = parts.port or 2379
            except ValueError:
                port = -1
            if not parts.hostname or port < 1:
                raise ConfigurationError(
                    f"registry URL {url!r}: {host!r} is not host:port; write e.g. "
                    "etcd://10.0.0.1:2379,10.0.0.2:2379"
                )
            endpoints.append(f"http://{host}")
        if not endpoints:
            raise ConfigurationError(
                f"registry URL {url!r} names no etcd endpoint; write e.g. etcd://127.0.0.1:2379"
            )
        return cls(endpoints, ttl=ttl, url=url, prefix="/" + path if path else "/orchestro")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=max(1.0, self.ttl / 3)),
                read_bufsize=2**20,  # large watch events
            )
        return self._session

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers; rotate past those that do not."""
        errors = []
        for _ in range(len(self._endpoints)):
            endpoint = self._endpoints[0]
            try:
                async with self._client().post(endpoint + path, json=body) as response:
                    payload = await response.json(content_type=None)
                    if response.status != 200:
                        message = payload.get("message") or payload.get("error") or payload
                        raise _EtcdError(str(message))
                    result: dict[str, Any] = payload
                    return result
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{endpoint}: {exc or type(exc).__name__}")
                self._endpoints.append(self._endpoints.pop(0))
        raise DiscoveryError(f"registry {self.url}: cannot reach etcd ({'; '.join(errors)})")

    async def _grant(self) -> str:
        granted = await self._call("/v3/lease/grant", {"TTL": max(1, math.ceil(self.ttl))})
        lease = str(granted["ID"])
        self._lease = lease
        return lease

    async def register(self, instance: Instance) -> None:
        key = f"{self._prefix}{instance.cell}/{instance.id}"
        for _ in range(2):
            lease = self._lease or await self._grant()
            body = {"key": _b64(key), "value": _b64(instance.model_dump_json()), "lease": lease}
            try:
                await self._call("/v3/kv/put", body)
            except _EtcdError as exc:
                if "lease not found" in str(exc):
                    self._lease = None  # expired while unreachable: take a new one
                    continue
                raise DiscoveryError(f"registry {self.url}: {exc}") from exc
            self._mine[instance.id] = key
            return
        raise DiscoveryError(f"registry {self.url}: etcd keeps forgetting this process's lease")

    async def heartbeat(self) -> None:
        if self._lease is None:
            if self._mine:
                raise LeaseLost("no lease")
            return
        try:
            answer = await self._call("/v3/lease/keepalive", {"ID": self._lease})
        except _EtcdError as exc:
            raise DiscoveryError(f"registry {self.url}: {exc}") from exc
        if "error" in answer or "result" not in answer:
            # The keep-alive stream failed (e.g. etcd's apply lagging: "timed out waiting
            # for the applied index"): the lease may be alive, so renew it again. Taking a
            # new one here re-registered every instance of the process on every hiccup,
            # and under load those writes made the next hiccup likelier.
            error = answer.get("error", answer)
            message = error.get("message", error) if isinstance(error, dict) else error
            raise DiscoveryError(f"registry {self.url}: lease renewal failed ({message})")
        if "TTL" not in answer["result"]:  # etcd answers for a lease it does not know
            self._lease = None  # expired: the agent registers again under a new one
            raise LeaseLost(f"lease expired in {self.url}")

    async def deregister(self, instance_id: str) -> None:
        key = self._mine.pop(instance_id, None)
        if key is None:
            return
        try:
            await self._call("/v3/kv/deleterange", {"key": _b64(key)})
        except _EtcdError as exc:
            raise DiscoveryError(f"registry {self.url}: {exc}") from exc

    async def _range(self) -> tuple[dict[str, Instance], str]:
        try:
            answer = await self._call(
                "/v3/kv/range", {"key": _b64(self._prefix), "range_end": _prefix_end(self._prefix)}
            )
        except _EtcdError as exc:
            raise DiscoveryError(f"registry {self.url}: {exc}") from exc
        found: dict[str, Instance] = {}
        for kv in answer.get("kvs", []):
            key = _unb64(kv["key"]).decode(errors="replace")
            instance = self._parse(key, kv.get("value", ""))
            if instance is not None:
                found[key] = instance
        return found, str(answer["header"]["revision"])

    def _parse(self, key: str, value: str) -> Instance | None:
        try:
            return Instance.model_validate_json(_unb64(value))
        except (ValidationError, ValueError) as exc:
            if key not in self._warned:  # warn once per bad record, never crash
                self._warned.add(key)
                _log.warning("registry %s: skipping invalid record %r: %s", self.url, key, exc)
            return None

    async def list(self) -> Sequence[Instance]:
        found, _ = await self._range()
        return list(found.values())

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        found, revision = await self._range()
        yield list(found.values())
        request = {
            "create_request": {
                "key": _b64(self._prefix),
                "range_end": _prefix_end(self._prefix),
                "start_revision": str(int(revision) + 1),
            }
        }
        endpoint = self._endpoints[0]
        try:
            async with self._client().post(
                endpoint + "/v3/watch",
                json=request,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, connect=self.ttl),
            ) as response:
                pending = b""
                while True:
                    chunk = await response.content.readany()
                    if not chunk:
                        break  # the stream ended
                    # Take everything etcd has sent so far, not one line: a burst (a fleet
                    # starting, a lease expiring) becomes one snapshot instead of one per
                    # event, and a watcher that falls behind catches up in larger steps.
                    pending += chunk + response.content.read_nowait()
                    *lines, pending = pending.split(b"\n")
                    changed = False
                    for line in lines:
                        if line.strip():
                            changed |= self._follow(json.loads(line), found)
                    if changed:
                        yield list(found.values())
        except (aiohttp.ClientError, ValueError) as exc:
            self._endpoints.append(self._endpoints.pop(0))
            raise DiscoveryError(f"registry {self.url}: watch failed ({exc})") from exc
        raise DiscoveryError(f"registry {self.url}: watch stream ended")

    def _follow(self, message: dict[str, Any], found: dict[str, Instance]) -> bool:
        """Apply one watch response to ``found``; whether it held any event."""
        result = message.get("result", {})
        if result.get("canceled") or result.get("compact_revision"):
            raise DiscoveryError(f"registry {self.url}: watch cancelled; re-reading")
        events = result.get("events")
        for event in events or ():
            kv = event["kv"]
            key = _unb64(kv["key"]).decode(errors="replace")
            if event.get("type") == "DELETE":
                found.pop(key, None)
            else:
                instance = self._parse(key, kv.get("value", ""))
                if instance is not None:
                    found[key] = instance
        return bool(events)

    async def aclose(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(DiscoveryError, _EtcdError):  # else it expires by itself
                await self._call("/v3/lease/revoke", {"ID": self._lease})
        self._lease = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class _EtcdError(Exception):
    """etcd answered with an error (as opposed to not answering)."""
