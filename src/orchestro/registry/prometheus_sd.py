"""Prometheus HTTP service discovery: the registry's instances as ``http_sd`` target groups,
served on a cell's mesh listener at ``/prometheus/sd`` (see ``docs/concepts/observability.md``):
every instance the registry knows, with ``cell`` and ``instance`` labels, so one
``http_sd_configs`` entry finds every cell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from .base import Instance

__all__ = ["sd_handler", "sd_targets"]


def sd_targets(cells: Mapping[str, Sequence[Instance]]) -> list[dict[str, Any]]:
    """Prometheus ``http_sd`` target groups: one per instance."""
    groups = []
    for cell, instances in sorted(cells.items()):
        for i in instances:
            host = f"[{i.host}]" if ":" in i.host else i.host
            labels = {
                "cell": cell,
                "instance": i.id,
                "__meta_orchestro_state": str(i.state),
                "__meta_orchestro_hostname": i.hostname,
                "__meta_orchestro_version": i.version or "",
                "__scheme__": i.scheme,
            }
            labels.update({f"__meta_orchestro_label_{_label(k)}": v for k, v in i.labels.items()})
            groups.append({"targets": [f"{host}:{i.port}"], "labels": labels})
    return groups


def _label(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def sd_handler(
    cells: Callable[[], Mapping[str, Sequence[Instance]]],
) -> Callable[[web.BaseRequest], Any]:
    async def prometheus_sd(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(
            body=json.dumps(sd_targets(cells())).encode(), content_type="application/json"
        )

    return prometheus_sd
