"""A small YAML emitter for the plain data the generators build (dicts, lists, strings,
numbers, booleans), so that writing manifests needs no YAML library.

Keys keep their insertion order, which the generators choose (``apiVersion``, ``kind``,
``metadata``, then the rest), so output is stable and diffs stay small. A string is written
plain only when it cannot be read back as anything else; otherwise it is double-quoted with
JSON's escapes, which are valid YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = ["dump", "dump_all"]

_PLAIN: Final = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
# Words YAML 1.1 readers (pyyaml, older tools) take for booleans or null.
_RESERVED: Final = frozenset(["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"])


def dump(data: Mapping[str, Any]) -> str:
    """``data`` as one YAML document."""
    return "\n".join(_mapping(data, 0)) + "\n"


def dump_all(documents: Iterable[Mapping[str, Any]]) -> str:
    """Several documents, separated by ``---``."""
    return "---\n".join(dump(document) for document in documents)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _key(key: str) -> str:
    return key if _PLAIN.fullmatch(key) and key.lower() not in _RESERVED else json.dumps(key)


def _mapping(data: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    if not data:
        return [pad + "{}"]
    lines = []
    for key, value in data.items():
        head = f"{pad}{_key(key)}:"
        if isinstance(value, Mapping) and value:
            lines.append(head)
            lines.extend(_mapping(value, indent + 2))
        elif isinstance(value, Sequence) and not isinstance(value, str) and value:
            lines.append(head)
            lines.extend(_sequence(value, indent))
        else:
            lines.append(f"{head} {_inline(value)}")
    return lines


def _sequence(items: Sequence[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for item in items:
        if isinstance(item, Mapping) and item:
            inner = _mapping(item, indent + 2)
            lines.append(pad + "- " + inner[0][indent + 2 :])
            lines.extend(inner[1:])
        elif isinstance(item, Sequence) and not isinstance(item, str) and item:
            raise TypeError("nested lists are not written (no manifest needs them)")
        else:
            lines.append(f"{pad}- {_inline(item)}")
    return lines


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    return _scalar(value)
