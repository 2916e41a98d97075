"""Admission: whether a cell takes service requests now, and how many it is answering.

The pipeline's frame runs admission itself, before every step of a service route (see
:mod:`orchestro.gateway.pipeline`): a readiness check, a concurrency check and two counter
updates inline, where a hook step cost two function calls per request.
"""

from __future__ import annotations

from typing import Final

from ..errors import HTTPError

__all__ = ["UNPROCESSED_HEADER", "Admission", "Gate"]

# On a 503 refused by admission (starting, draining, at the concurrency limit): the service
# never saw the request, so a caller may send it again, to this instance or another, whatever
# its method (gRPC's "transparent retry" of a stream the server refused unprocessed, and
# HTTP/2's REFUSED_STREAM). The mesh reads it (mesh/outcomes.py). Its value says why: the
# gate's reason ("draining": a caller stops choosing this instance at once, ahead of its
# registry view; "starting"), or "busy" at the concurrency limit.
UNPROCESSED_HEADER: Final = "x-orchestro-unprocessed"
_BUSY = {"Retry-After": "1", UNPROCESSED_HEADER: "busy"}


class Gate:
    """Whether a cell takes service requests now, and how many it is answering.

    The cell host opens it once ``on_start`` is done and closes it when draining starts;
    admission and ``/readyz`` read it.
    """

    __slots__ = ("admission", "admits", "admitted", "in_flight", "is_open", "reason")

    def __init__(self) -> None:
        self.is_open = False  # ready (what /readyz says)
        self.admits = False  # lets service requests in
        self.reason = "starting"
        self.in_flight = 0
        self.admitted = 0  # requests let in since start (a replica's load report)
        # The admission of the cell's routes (its concurrency limit), once the gateway is
        # built: calls from this process (the mesh's local transport) pass it too.
        self.admission: Admission | None = None

    def open(self) -> None:
        self.is_open = self.admits = True
        self.reason = "serving"

    def close(self, reason: str, *, admit: bool = False) -> None:
        """Not ready any more; ``admit``: still answer requests on connections already open
        (a replica whose listener is about to close them, whose peers take new ones)."""
        self.is_open = False
        self.admits = admit
        self.reason = reason


class Admission:
    """The admission of one cell's service routes: refuse with 503 + ``Retry-After`` while
    the gate does not admit, or when the cell already answers ``max_concurrency`` requests.

    The frame checks ``gate.admits`` and ``gate.in_flight < limit`` itself, counts the
    request in, and out once it is answered; :meth:`refusal` is the answer otherwise.
    """

    __slots__ = ("_busy", "_cell", "gate", "limit")

    def __init__(self, gate: Gate, cell: str, *, max_concurrency: int | None = None) -> None:
        self.gate = gate
        self.limit: float = float("inf") if max_concurrency is None else max_concurrency
        self._cell = cell
        self._busy = (
            f"cell {cell!r} is answering its limit of {max_concurrency} concurrent requests"
        )
        gate.admission = self

    def admits(self) -> bool:
        """Whether a request may come in now (the frame inlines the same test)."""
        gate = self.gate
        return gate.admits and gate.in_flight < self.limit

    def refusal(self) -> HTTPError:
        """The 503 for a request the gate does not let in now, marked as not processed
        (:data:`UNPROCESSED_HEADER`): safe to send again for any method."""
        gate = self.gate
        if not gate.admits:
            return HTTPError(
                503,
                f"cell {self._cell!r} is {gate.reason}",
                headers={"Retry-After": "1", UNPROCESSED_HEADER: gate.reason},
            )
        return HTTPError(503, self._busy, headers=_BUSY)
