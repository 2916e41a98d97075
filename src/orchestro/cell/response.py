"""A service's explicit answer: :class:`Response` when it chooses the status and headers
itself (how the gateway renders it: :mod:`orchestro.gateway.responses`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["Response"]

T = TypeVar("T")


class Response(Generic[T]):
    """An answer with an explicit status, headers or media type.

    ``content`` is serialised like a plain return value (JSON), unless it is ``bytes`` or
    ``str``, which are sent as they are with ``media_type`` (default
    ``application/octet-stream`` and ``text/plain``).
    """

    __slots__ = ("content", "headers", "media_type", "status")

    def __init__(
        self,
        content: T | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        if not 100 <= status <= 599:
            raise ValueError(f"Response status must be 100-599, not {status}")
        self.content = content
        self.status = status
        self.headers = dict(headers or {})
        self.media_type = media_type

    def __repr__(self) -> str:
        return f"Response(status={self.status}, content={self.content!r})"
