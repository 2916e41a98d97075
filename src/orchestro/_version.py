"""The installed package's version (a module of its own: importable from anywhere)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orchestro")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
