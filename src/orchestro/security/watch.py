"""Files an outside writer replaces, re-read when their ``stat`` changes.

The signature of a file is its device, inode, size and mtime, following symlinks: a Kubernetes
secret volume swaps a symlink, an agent renames a file, an editor writes in place. A set that
does not load (a new certificate written before its key) keeps the last good value and is
tried again on the next change, with one warning per bad signature.

```python
watch = FileWatch((cert, key), lambda: load(cert, key), what="public certificate")
watch.current        # the last value that loaded
watch.refresh()      # the new value if the files changed and load, else None
```
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from .spiffe import IdentityError

__all__ = ["FileWatch"]

_log = logging.getLogger("orchestro.security")

T = TypeVar("T")
_Signature = tuple[tuple[int, int, int, int], ...]


class FileWatch(Generic[T]):
    """The value ``load`` makes of ``files``, loaded again when one of them changes.

    ``load`` raises :class:`IdentityError` for files that do not load; the first call's error
    propagates (there is no value to keep yet)."""

    def __init__(self, files: Sequence[Path], load: Callable[[], T], *, what: str) -> None:
        self.files = tuple(files)
        self.what = what
        self._load = load
        # Stat before loading: a change during the load is seen by the next refresh.
        self._signature = self._stat()
        self._current = load()
        self._failed: _Signature | None = None

    @property
    def current(self) -> T:
        return self._current

    def _stat(self) -> _Signature:
        signature = []
        for path in self.files:
            try:
                st = os.stat(path)  # follows symlinks: a swapped target is a change
            except OSError:
                signature.append((0, 0, 0, 0))
                continue
            signature.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(signature)

    def refresh(self) -> T | None:
        """The new value if the files changed and load, else ``None`` (the current one stays)."""
        signature = self._stat()
        if signature == self._signature:
            return None
        try:
            value = self._load()
        except IdentityError as exc:
            if signature != self._failed:
                _log.warning("keeping the current %s: %s", self.what, exc)
                self._failed = signature
            return None
        self._signature = signature
        self._failed = None
        self._current = value
        return value
