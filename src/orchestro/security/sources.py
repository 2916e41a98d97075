"""Where a cell's identity comes from, and how it stays fresh.

An :class:`IdentitySource` holds the current :class:`~orchestro.security.certs.CellIdentity`
and, asked with the time, says whether there is a newer one: the development CA issues a new
certificate once 70% of the old one's life has passed; files written by an external issuer
(cert-manager, SPIRE's helper, Vault agent) are re-read when their ``stat`` changes (inode,
size or mtime: a Kubernetes secret volume swaps a symlink, an agent renames a file, an editor
writes in place). :func:`keep_fresh` is the loop that applies what they say to a
:class:`~orchestro.security.tls.CellTLS`.

```python
source = open_identity("vault", SecuritySettings())
tls = CellTLS(source.current)
background.start("identity", lambda: keep_fresh(tls, source, interval=5.0))
```
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from .ca import DevelopmentCA
from .certs import CellIdentity, load_identity
from .settings import SecuritySettings
from .tls import CellTLS
from .watch import FileWatch

__all__ = ["DevelopmentSource", "FileSource", "IdentitySource", "keep_fresh", "open_identity"]

_log = logging.getLogger("orchestro.security")

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IdentitySource(Protocol):
    """The current identity of one cell, and its successor when there is one."""

    @property
    def current(self) -> CellIdentity: ...

    def refresh(self, now: dt.datetime) -> CellIdentity | None:
        """A newer identity than :attr:`current` (which it becomes), or ``None``."""
        ...


class DevelopmentSource:
    """Identities issued by the development CA, renewed at 70% of their life."""

    def __init__(
        self, ca: DevelopmentCA, cell: str, *, lifetime: dt.timedelta, now: dt.datetime
    ) -> None:
        self.ca = ca
        self.cell = cell
        self.lifetime = lifetime
        self._current = ca.issue(cell, now=now, lifetime=lifetime)

    @property
    def current(self) -> CellIdentity:
        return self._current

    def refresh(self, now: dt.datetime) -> CellIdentity | None:
        if now < self._current.renew_at:
            return None
        self._current = self.ca.issue(self.cell, now=now, lifetime=self.lifetime)
        return self._current


class FileSource:
    """An identity in files an external issuer rewrites; re-read when they change."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        bundle_file: Path | None,
        *,
        trust_domain: str,
        cell: str | None = None,
    ) -> None:
        self.files = (cert_file, key_file, bundle_file)
        self.trust_domain = trust_domain
        self.cell = cell
        self._watch = FileWatch(
            [path for path in self.files if path is not None], self._load, what="identity"
        )
        self._warned_expiry = False

    @property
    def current(self) -> CellIdentity:
        return self._watch.current

    def _load(self) -> CellIdentity:
        cert, key, bundle = self.files
        return load_identity(cert, key, bundle, trust_domain=self.trust_domain, cell=self.cell)

    def refresh(self, now: dt.datetime) -> CellIdentity | None:
        identity = self._watch.refresh()
        if identity is not None:
            self._warned_expiry = False
            return identity
        current = self._watch.current
        if now >= current.renew_at and not self._warned_expiry:
            self._warned_expiry = True
            _log.warning(
                "identity %s in %s is past 70%% of its life and expires at %s: is its "
                "issuer renewing it?",
                current.spiffe_id,
                self.files[0],
                current.not_after.isoformat(),
            )
        return None


def open_identity(
    cell: str, settings: SecuritySettings, *, now: dt.datetime | None = None
) -> IdentitySource:
    """The identity ``cell`` starts with: from the configured files, else issued by the
    development CA in the state directory (created on first use)."""
    if settings.cert_file is not None and settings.key_file is not None:
        return FileSource(
            settings.cert_file,
            settings.key_file,
            settings.bundle_file,
            trust_domain=settings.trust_domain,
            cell=cell,
        )
    now = now or _utcnow()
    ca = DevelopmentCA.load_or_create(trust_domain=settings.trust_domain, now=now)
    return DevelopmentSource(
        ca, cell, lifetime=dt.timedelta(seconds=settings.leaf_lifetime), now=now
    )


async def keep_fresh(
    tls: CellTLS,
    source: IdentitySource,
    *,
    interval: float,
    clock: Clock = _utcnow,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Forever: every ``interval`` seconds, load a newer identity into ``tls`` when
    ``source`` has one. Run it under a :class:`~orchestro.background.Background`."""
    while True:
        await sleep(interval)
        identity = source.refresh(clock())
        if identity is not None:
            tls.update(identity)
