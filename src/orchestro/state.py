"""The state directory: what orchestro keeps on one machine.

One directory per machine holds what every orchestro process on it shares: the local
registry (``registry.db``), the development CA (``ca/``) and whatever later features keep per
machine. It is, in order:

1. ``$ORCHESTRO_STATE_DIR``, when set (tests point it at a temporary directory);
2. ``$XDG_RUNTIME_DIR/orchestro`` (a per-user tmpfs, cleared at logout);
3. ``$XDG_STATE_HOME/orchestro``, else ``~/.local/state/orchestro``.

It is created on first use with mode 0700: it holds a CA key, so only its owner may enter it.

```python
from orchestro.state import state_dir

ca_directory = state_dir() / "ca"
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from .errors import ConfigurationError

__all__ = ["STATE_DIR_ENV", "default_state_dir", "state_dir"]

STATE_DIR_ENV: Final = "ORCHESTRO_STATE_DIR"


def default_state_dir() -> Path:
    """Where the state directory is, without creating it."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "orchestro"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "orchestro"


def state_dir(*, create: bool = True) -> Path:
    """The state directory, created (mode 0700) unless ``create`` is false."""
    path = default_state_dir()
    if create:
        try:
            # mode applies to the last component only; parents get the umask's default, as
            # with XDG directories created by anyone else.
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"state directory {path}: cannot create it ({exc.strerror}); set "
                f"{STATE_DIR_ENV} to a writable directory"
            ) from exc
    return path
