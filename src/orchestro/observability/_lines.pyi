# The optional C extension _lines.c (setup.py); access.py works without it.
from collections.abc import Callable
from typing import Any

class Lines:
    def __init__(
        self,
        head: str,
        route: str,
        fallback: Callable[[tuple[Any, ...]], str],
        iso_time: Callable[[float], str],
        url_path: Callable[[str], str],
    ) -> None: ...
    def make(self, entry: tuple[Any, ...]) -> str: ...
