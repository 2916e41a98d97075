"""The inbound pipeline's steps (see :mod:`orchestro.gateway.pipeline`): access policy.

Each is a small object whose ``hooks(route)`` says what it does on a route; they are composed
per route when the gateway is built.
"""

from __future__ import annotations

from .access import AccessStep

__all__ = ["AccessStep"]
