"""The gateway's router: method and path to a route, built once and then frozen.

Literal paths are one dictionary lookup; paths with ``{placeholders}`` are tried in order of
specificity (fewer placeholders first, so ``/orders/summary`` wins over ``/orders/{id}``),
each placeholder matching one whole, percent-decoded segment. A path that matches but not
for the method yields the methods allowed there (for 405 + ``Allow``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

__all__ = ["Match", "Router"]

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_NO_PARAMS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Match(Generic[T]):
    """What a request resolved to: a target and its path parameters, or the methods that
    the path allows (``target`` is ``None``: 404 when ``allowed`` is empty, else 405)."""

    target: T | None
    params: Mapping[str, str]
    allowed: tuple[str, ...] = ()


class _Resource(Generic[T]):
    __slots__ = ("allowed", "methods", "names", "path", "pattern")

    def __init__(self, path: str) -> None:
        self.path = path
        self.names = _PLACEHOLDER.findall(path)
        self.pattern = re.compile(
            "".join(
                "([^/]+)" if _PLACEHOLDER.fullmatch(part) else re.escape(part)
                for part in re.split(r"(\{[^{}]+\})", path)
            )
        )
        self.methods: dict[str, T] = {}
        self.allowed: tuple[str, ...] = ()


class Router(Generic[T]):
    """Maps (method, raw path) to a target."""

    def __init__(self) -> None:
        self._static: dict[str, _Resource[T]] = {}
        self._dynamic: list[_Resource[T]] = []
        self._frozen = False
        # Literal routes resolve to the same answer every time: build it once.
        self._static_matches: dict[tuple[str, str], Match[T]] = {}

    def add(self, method: str, path: str, target: T) -> None:
        if self._frozen:
            raise RuntimeError("the router is frozen: routes are added before the gateway starts")
        resource = self._static.get(path) or next(
            (r for r in self._dynamic if r.path == path), None
        )
        if resource is None:
            resource = _Resource[T](path)
            if resource.names:
                self._dynamic.append(resource)
            else:
                self._static[path] = resource
        if method in resource.methods:
            raise ValueError(f"{method} {path} is routed twice")
        resource.methods[method] = target

    def freeze(self) -> None:
        self._dynamic.sort(key=lambda r: (len(r.names), -r.path.find("{")))
        for resource in (*self._static.values(), *self._dynamic):
            resource.allowed = tuple(resource.methods)
        for path, resource in self._static.items():
            for method, target in resource.methods.items():
                self._static_matches[(method, path)] = Match(target, _NO_PARAMS)
        self._frozen = True

    def resolve(self, method: str, raw_path: str) -> Match[T]:
        """Resolve a request; ``raw_path`` is the path as sent (percent-encoded, no query)."""
        known = self._static_matches.get((method, raw_path))
        if known is not None:
            return known
        resource = self._static.get(raw_path)
        params: Mapping[str, str] = _NO_PARAMS
        if resource is None:
            for candidate in self._dynamic:
                found = candidate.pattern.fullmatch(raw_path)
                if found is not None:
                    resource = candidate
                    params = dict(zip(candidate.names, map(unquote, found.groups()), strict=True))
                    break
            else:
                return Match(None, _NO_PARAMS)
        target = resource.methods.get(method)
        if target is None:
            return Match(None, params, resource.allowed)
        return Match(target, params)
