"""Keep this process's instances registered, whatever the registry goes through.

The agent registers instances, renews the process's lease every third of the TTL, and when the
registry is unreachable keeps retrying with exponential backoff and jitter (tenacity), logging
one warning with the URL. When the registry answers again, or reports the lease lost, every
instance is registered again under the same id — so no duplicates and no ghosts.

The keep-alive runs under a :class:`~orchestro.background.Background` owner: an unexpected
error (not the registry being down) is logged, counted and the loop restarted, rather than
letting the instance expire while it still serves. ``say`` (the CLI passes its terminal
line) tells a person once, plainly, that the registry cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from ..background import Background
from ..errors import DiscoveryError
from .base import Instance, InstanceState, LeaseLost, Registry

__all__ = ["Registration"]

_log = logging.getLogger("orchestro.registry")


class Registration:
    """The instances this process has registered, kept alive in the background."""

    def __init__(
        self,
        registry: Registry,
        *,
        first_attempt_timeout: float = 2.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self._instances: dict[str, Instance] = {}
        # Ids whose last write did not reach the registry: written again on the next renewal
        # (the others are there while the lease lives; rewriting them all after a hiccup
        # only loads a registry that is already struggling).
        self._unwritten: set[str] = set()
        self._tasks = Background("registration")
        self._wake = asyncio.Event()
        self._first_attempt_timeout = first_attempt_timeout
        self._say = say
        self._said = False
        self.healthy = True
        self._closed = False

    def _bound(self, timeout: float | None) -> float:
        if timeout is None:
            return self._first_attempt_timeout
        return max(0.0, min(self._first_attempt_timeout, timeout))

    async def add(self, instance: Instance, *, within: float | None = None) -> None:
        """Register ``instance`` (or update it: same id). Never raises for an unreachable
        registry: the cell keeps serving and registration is retried in the background.
        ``within`` (seconds) bounds the first attempt further (a drain's time left). Once
        closed, a no-op: a drain step still running after a forced exit must neither fail nor
        leave a record behind the deregistration."""
        if self._closed:
            return
        self._instances[instance.id] = instance
        if not self._tasks.running("keep-alive"):
            self._tasks.start("keep-alive", self._keep_alive)
        try:
            async with asyncio.timeout(self._bound(within)):
                await self.registry.register(instance)
        except (DiscoveryError, TimeoutError, LeaseLost) as exc:
            self._unwritten.add(instance.id)
            self._failed(exc)
        else:
            self._unwritten.discard(instance.id)

    async def set_state(
        self, instance_id: str, state: InstanceState, *, within: float | None = None
    ) -> None:
        instance = self._instances.get(instance_id)
        if instance is not None and not self._closed:
            await self.add(instance.model_copy(update={"state": state}), within=within)

    async def remove(self, instance_id: str, *, within: float | None = None) -> None:
        self._unwritten.discard(instance_id)
        if self._instances.pop(instance_id, None) is None:
            return
        try:
            async with asyncio.timeout(self._bound(within)):
                await self.registry.deregister(instance_id)
        except (DiscoveryError, TimeoutError) as exc:
            # The TTL removes it: this process stops renewing its lease soon.
            _log.warning("could not deregister %s from %s: %s", instance_id, self.registry.url, exc)

    async def aclose(self, *, within: float | None = None) -> None:
        """Deregister every instance (each bounded by ``within`` seconds), stop the keep-alive.
        Afterwards ``add`` and ``set_state`` do nothing."""
        self._closed = True
        await self._tasks.aclose()
        for instance_id in list(self._instances):
            await self.remove(instance_id, within=within)

    def _failed(self, exc: BaseException) -> None:
        if self.healthy:
            _log.warning(
                "registry %s unreachable (%s); the cell keeps serving and registration is retried",
                self.registry.url,
                exc or type(exc).__name__,
            )
            if self._say is not None and not self._said:
                self._said = True
                self._say(
                    f"warning: {exc or type(exc).__name__}; this cell serves, but callers "
                    "cannot find it until the registry answers (retrying in the background)"
                )
        self.healthy = False
        self._wake.set()

    async def _keep_alive(self) -> None:
        interval = self.registry.ttl / 3
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._instances:
                continue
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((DiscoveryError, TimeoutError)),
                wait=wait_random_exponential(multiplier=0.2, max=interval),
                reraise=True,
            ):
                with attempt:
                    await self._renew()

    async def _renew(self) -> None:
        try:
            async with asyncio.timeout(self.registry.ttl / 3):
                try:
                    await self.registry.heartbeat()
                    lost = False
                except LeaseLost:
                    lost = True
                    _log.warning(
                        "registry %s forgot this process's lease; registering again",
                        self.registry.url,
                    )
                # A lost lease took the records with it: all of them again (the same ids
                # make this idempotent); else those whose write failed.
                again = list(self._instances) if lost else list(self._unwritten)
                for instance_id in again:
                    instance = self._instances.get(instance_id)
                    if instance is not None:
                        await self.registry.register(instance)
                        self._unwritten.discard(instance_id)
        except (DiscoveryError, TimeoutError) as exc:
            self._failed(exc)
            raise
        if not self.healthy:
            _log.warning("registry %s reachable again; instances registered", self.registry.url)
        self.healthy = True
