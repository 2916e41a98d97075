"""Admission: whether a cell takes service requests now, and how many it is answering.

The pipeline's frame runs admission itself, before every step of a service route (see
:mod:`orchestro.gateway.pipeline`): a readiness check, a concurrency check and two counter
updates inline, where a hook step cost two function calls per request.
"""

from __future__ import annotations

from ..errors import HTTPError

__all__ = ["Admission", "Gate"]


class Gate:
    """Whether a cell takes service requests now, and how many it is answering.

    The cell host opens it once ``on_start`` is done and closes it when draining starts;
    admission and ``/readyz`` read it.
    """

    __slots__ = ("admits", "admitted", "in_flight", "is_open", "reason")

    def __init__(self) -> None:
        self.is_open = False  # ready (what /readyz says)
        self.admits = False  # lets service requests in
        self.reason = "starting"
        self.in_flight = 0
        self.admitted = 0  # requests let in since start (a replica's load report)

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

    def refusal(self) -> HTTPError:
        """The 503 for a request the gate does not let in now."""
        if not self.gate.admits:
            return HTTPError(
                503, f"cell {self._cell!r} is {self.gate.reason}", headers={"Retry-After": "1"}
            )
        return HTTPError(503, self._busy, headers={"Retry-After": "1"})
