"""Riding out a restart: wait for an instance to (re)appear, and pace resends of requests
that were refused before they were processed.

A single-instance cell restarted under load has, for a second or two, no ready instance; its
old process refuses connections (or answers 503 "draining", marked as not processed) until
the registry view drops it. A call that fails at once then fails for nothing: the caller
usually has most of its deadline left. So, within the call's deadline:

- with no ready instance, the call waits on the registry view until one appears, for at most
  ``CallPolicy.wait_for_instances`` (gRPC's ``wait_for_ready`` waits up to the deadline;
  Linkerd holds requests while a service has no endpoints and fails them after 3 s);
- a request refused unprocessed is sent again whatever its method, and such resends don't
  count against ``max_attempts`` (gRPC's transparent retries, gRFC A6) but are paced: the
  n-th waits ``backoff_base * 2**n`` (capped at ``unprocessed_backoff_max``), with jitter
  in its upper half, so a burst of refusals can't spend the attempts in milliseconds. They
  are paid from the retry budget like any retry.

Waits are counted in ``orchestro.mesh.waits`` (by outcome) and timed in
``orchestro.mesh.wait.duration``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from ..background import exponential

if TYPE_CHECKING:
    from ..registry import RegistryView

__all__ = ["InstanceWaits", "unprocessed_pause"]


def unprocessed_pause(
    resend: int, base: float, cap: float, rng: Callable[[float, float], float] = random.uniform
) -> float:
    """The pause before the ``resend``-th (1, 2, ...) resend of a request refused
    unprocessed: exponential from ``base``, capped at ``cap``, in the upper half of that
    ("equal jitter"), so it is never close to zero."""
    ceiling = exponential(resend, base, cap)
    return rng(ceiling / 2, ceiling)


class InstanceWaits:
    """Waits of one mesh for a ready instance of a cell, with their telemetry."""

    def __init__(self, view: RegistryView, now: Callable[[], float]) -> None:
        self._view = view
        self._now = now
        self._instruments: tuple[Any, Any] | None = None

    async def wait(
        self, cell: str, until: float, obs: Any = None, skip: Container[str] = ()
    ) -> bool:
        """Wait until ``cell`` has a ready instance (not one of ``skip``: those that said
        they are draining) (True), or ``until`` passes (False)."""
        started = self._now()
        remaining = until - started
        view = self._view

        def ready(v: RegistryView) -> bool:
            return any(i.id not in skip for i in v.ready(cell))

        appeared = ready(view)
        if not appeared and remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    await view.wait_for(ready)
                appeared = True
            except TimeoutError:
                appeared = False
        if obs is not None:
            self._record(obs, cell, "ready" if appeared else "timeout", self._now() - started)
        return appeared

    def _record(self, obs: Any, cell: str, outcome: str, seconds: float) -> None:
        if self._instruments is None:
            from ..observability.telemetry import get_telemetry

            producer = get_telemetry().producer
            self._instruments = (
                producer.counter(
                    "orchestro.mesh.waits",
                    "{wait}",
                    "Calls that found no ready instance of their target cell and waited for "
                    "one, by outcome (ready, timeout).",
                ),
                producer.histogram(
                    "orchestro.mesh.wait.duration",
                    "s",
                    "How long calls waited for a ready instance of their target cell.",
                ),
            )
        waits, duration = self._instruments
        attributes = {"orchestro.wait.outcome": outcome}
        obs.count(waits, cell, more=attributes)
        duration.series({"server.address": cell, **attributes}).record(seconds)
