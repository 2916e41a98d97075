"""Server TLS for a cell's public port, with the user's own certificate, reloaded when it changes.

The public port serves browsers and other outside clients: its certificate is the user's
(from Let's Encrypt, a corporate CA, cert-manager), not a cell identity, and no client
certificate is asked for. The files are polled like a cell identity's; a new pair is loaded
into a new context, which new connections are handed (through ``sni_callback``, as
:class:`~orchestro.security.tls.CellTLS` does). A pair that does not load (half written, a
certificate with another key) leaves the current context untouched: loading into the live one
would install the new certificate before the key check fails, and break every handshake.

```python
public = PublicTLS(Path("site.crt"), Path("site.key"))
site = web.TCPSite(runner, host, port, ssl_context=public.context)
public.refresh()     # from a background loop every few seconds
```
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .spiffe import IdentityError
from .watch import FileWatch

__all__ = ["PublicTLS"]


class PublicTLS:
    """A server context for ``cert_file``/``key_file``, reloaded when either changes.

    :attr:`context` is the one to listen with; it stays the same object, and hands each new
    connection the context of the last pair that loaded."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._watch = FileWatch((cert_file, key_file), self._load, what="public certificate")
        self.context = self._watch.current
        self.context.sni_callback = self._select

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise IdentityError(
                f"public certificate {self.cert_file} with key {self.key_file}: cannot load "
                f"them ({exc}); write a PEM certificate chain and its unencrypted key"
            ) from exc
        return context

    def refresh(self) -> bool:
        """Load the files again if they changed; whether new connections get a new
        certificate. A pair that does not load keeps the current one until the next change."""
        return self._watch.refresh() is not None

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        current = self._watch.current
        if current is not context:
            ssl_object.context = current
