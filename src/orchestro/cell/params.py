"""Markers that say where a service parameter comes from.

Without a marker, a parameter named in the path template is a path parameter, a pydantic model
is the JSON body, and anything else is a query parameter. ``Annotated`` with a marker overrides
that::

    async def search(
        self,
        tenant: Annotated[str, Header()],              # header "tenant"
        request_id: Annotated[str | None, Header("x-request-id")] = None,
        sort: Annotated[str, Query(alias="order-by")] = "name",
        tags: Annotated[list[str], Body()] = [],       # a JSON array as the body
    ) -> list[Item]: ...
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Body", "Header", "Query"]


@dataclass(frozen=True, slots=True)
class Header:
    """Read the parameter from a request header.

    The header name defaults to the parameter name with ``_`` turned into ``-``
    (``x_tenant`` reads ``x-tenant``); header names are case-insensitive.
    """

    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """Read the parameter from the query string, optionally under another name."""

    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """Read the parameter from the JSON body (needed only for non-model types)."""
