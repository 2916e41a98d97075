"""The cells this process hosts: typed calls to one of them go straight to its host (the
in-process transport, :mod:`.transports.local`), not over the network."""

from __future__ import annotations

from typing import Any

__all__ = ["LocalCells"]


class LocalCells:
    """Serving hosts by cell name (shared by a mesh and its bindings)."""

    __slots__ = ("_hosts", "_turn")

    def __init__(self) -> None:
        self._hosts: dict[str, list[Any]] = {}  # cell -> CellHosts serving in this process
        self._turn = 0

    def attach(self, host: Any) -> None:
        self._hosts.setdefault(host.name, []).append(host)

    def detach(self, host: Any) -> None:
        hosts = self._hosts.get(host.name, [])
        if host in hosts:
            hosts.remove(host)

    def host(self, cell: str) -> Any:
        """A serving host of ``cell`` in this process (in turn), or None."""
        hosts = self._hosts.get(cell)
        if not hosts:
            return None
        self._turn += 1
        host = hosts[self._turn % len(hosts)]
        return host if host.gate.is_open else None
