"""Server TLS for a cell's public port, with the user's own certificate, reloaded in place.

The public port serves browsers and other outside clients: its certificate is the user's
(from Let's Encrypt, a corporate CA, cert-manager), not a cell identity, and no client
certificate is asked for. The files are polled like a cell identity's and a new pair is loaded
into the same context, for new connections.

```python
public = PublicTLS(Path("site.crt"), Path("site.key"))
site = web.TCPSite(runner, host, port, ssl_context=public.context)
public.refresh()     # from a background loop every few seconds
```
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from .spiffe import IdentityError

__all__ = ["PublicTLS"]

_log = logging.getLogger("orchestro.security")


class PublicTLS:
    """A server context for ``cert_file``/``key_file``, reloaded when either changes."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._signature = self._stat()
        self._failed: object = None
        self._load()

    def _stat(self) -> tuple[tuple[int, int, int, int], ...]:
        out = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
            except OSError:
                out.append((0, 0, 0, 0))
            else:
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _load(self) -> None:
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise IdentityError(
                f"public certificate {self.cert_file} with key {self.key_file}: cannot load "
                f"them ({exc}); write a PEM certificate chain and its unencrypted key"
            ) from exc

    def refresh(self) -> bool:
        """Load the files again if they changed; whether a new certificate is in use. A pair
        that does not load (half written) keeps the current one until the next change."""
        signature = self._stat()
        if signature == self._signature:
            return False
        try:
            self._load()
        except IdentityError as exc:
            if signature != self._failed:
                _log.warning("keeping the current public certificate: %s", exc)
                self._failed = signature
            return False
        self._signature = signature
        return True
