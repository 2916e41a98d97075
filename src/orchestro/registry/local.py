"""``local://[PATH]``: the embedded default registry, one SQLite file per machine.

Every orchestro process on the machine opens the same file (WAL mode, so readers never block
writers, and a busy timeout for concurrent writers). A process's instances carry an expiry
time it pushes forward on every heartbeat; a process killed with SIGKILL stops doing so and
its instances drop out of every view within the TTL. Watchers poll SQLite's cheap
``data_version`` every 50 ms and re-read the table only when a process wrote or an instance's
expiry passed.

Every SQLite call, opening the file included, runs in a worker thread: another process may
hold the file locked for seconds, and the event loop must keep serving meanwhile.

The default file is ``registry.db`` in the state directory (``$ORCHESTRO_STATE_DIR``, else
``$XDG_RUNTIME_DIR/orchestro``, cleared at logout, else ``$XDG_STATE_HOME/orchestro``).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from ..errors import ConfigurationError, DiscoveryError
from ..state import default_state_dir, state_dir
from .base import Instance, LeaseLost

__all__ = ["LocalRegistry", "default_path"]

_log = logging.getLogger("orchestro.registry")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    cell TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_expires ON instances (expires_at);
"""
POLL_INTERVAL = 0.05


def default_path() -> Path:
    """``registry.db`` in the state directory (:mod:`orchestro.state`)."""
    return default_state_dir() / "registry.db"


class LocalRegistry:
    """A registry in a SQLite file shared by the processes of one machine."""

    def __init__(self, path: Path, *, ttl: float = 5.0, url: str | None = None) -> None:
        self.path = path
        self.ttl = ttl
        self.url = url or f"local://{path}"
        self._owner = os.urandom(8).hex()
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        # Opened on first use, in a worker thread (see open()): opening may wait seconds for
        # another process's lock, and must never do so on the event loop.
        self._db: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, ttl: float) -> LocalRegistry:
        rest = url.split("://", 1)[1]
        path = Path(rest).expanduser() if rest else default_path()
        return cls(path, ttl=ttl, url=url if rest else f"local://{path}")

    async def open(self) -> None:
        """Open the file now (in a thread), so that a bad path or a corrupt file is reported
        here rather than by the first call. Optional: every call opens it when needed."""
        await self._run(lambda db: None)

    def _open(self) -> sqlite3.Connection:
        fix = "choose a writable file, e.g. --registry local:///tmp/orchestro-registry.db"
        try:
            if self.path.parent == default_state_dir():
                state_dir()  # the state directory: made private (0700), it holds a CA key
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
        except ConfigurationError as exc:
            raise ConfigurationError(f"registry {self.url}: {exc}; or {fix}") from exc
        except OSError as exc:
            raise ConfigurationError(
                f"registry {self.url}: cannot create {self.path.parent} ({exc.strerror}); {fix}"
            ) from exc
        # Processes starting together race to create the file and switch it to WAL, which
        # takes an exclusive lock that SQLite's busy timeout does not always wait for: retry.
        deadline = time.monotonic() + 10.0
        while True:
            try:
                return self._connect()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    self._fail(exc, fix)
                time.sleep(random.uniform(0.01, 0.05))
            except sqlite3.DatabaseError as exc:
                self._fail(exc, fix)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _fail(self, exc: sqlite3.DatabaseError, fix: str) -> NoReturn:
        message = str(exc)
        if "not a database" in message or "malformed" in message:
            raise ConfigurationError(
                f"registry {self.url}: {self.path} is not a registry database ({message}); "
                "delete it (it holds only live registrations) or choose another file"
            ) from exc
        raise ConfigurationError(
            f"registry {self.url}: cannot open {self.path} ({message}); {fix}"
        ) from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._closed:
                    raise DiscoveryError(f"registry {self.url} is closed")
                if self._db is None:
                    self._db = self._open()  # in this worker thread, never on the loop
                return fn(self._db)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:
            raise DiscoveryError(f"registry {self.url}: {exc}") from exc

    async def register(self, instance: Instance) -> None:
        record = instance.model_dump_json()
        expires = time.time() + self.ttl

        def put(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO instances (id, cell, owner, expires_at, record) VALUES (?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET cell=excluded.cell, owner=excluded.owner, "
                "expires_at=excluded.expires_at, record=excluded.record",
                (instance.id, instance.cell, self._owner, expires, record),
            )

        await self._run(put)
        self._mine.add(instance.id)

    async def heartbeat(self) -> None:
        if not self._mine:
            return
        now = time.time()

        def renew(db: sqlite3.Connection) -> int:
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                # An expired instance is not renewed: every reader has already dropped it, so
                # the agent must register it again (as with a lost etcd lease).
                renewed = db.execute(
                    "UPDATE instances SET expires_at=? WHERE owner=? AND expires_at > ?",
                    (now + self.ttl, self._owner, now),
                ).rowcount
                # Housekeeping: forget what expired well ago (readers skip it meanwhile).
                db.execute("DELETE FROM instances WHERE expires_at < ?", (now - self.ttl,))
            return int(renewed)

        renewed = await self._run(renew)
        if renewed < len(self._mine):
            raise LeaseLost(f"{len(self._mine) - renewed} of this process's instances expired")

    async def deregister(self, instance_id: str) -> None:
        self._mine.discard(instance_id)
        await self._run(lambda db: db.execute("DELETE FROM instances WHERE id=?", (instance_id,)))

    async def list(self) -> Sequence[Instance]:
        instances, _ = await self._snapshot()
        return instances

    async def _snapshot(self) -> tuple[Sequence[Instance], float]:
        """The live instances, and when the first of them expires (wall clock)."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT id, record, expires_at FROM instances WHERE expires_at > ? ORDER BY id",
                (time.time(),),
            ).fetchall()
        )
        first_expiry = min((row[2] for row in rows), default=math.inf)
        return self._parse([(row[0], row[1]) for row in rows]), first_expiry

    def _parse(self, rows: Sequence[Any]) -> Sequence[Instance]:
        found: builtins.list[Instance] = []
        for row_id, record in rows:
            try:
                found.append(Instance.model_validate_json(record))
            except ValidationError as exc:
                if row_id not in self._warned:  # warn once per bad record, never crash
                    self._warned.add(row_id)
                    _log.warning(
                        "registry %s: skipping invalid record %r: %s",
                        self.url,
                        row_id,
                        exc.errors(include_url=False)[0]["msg"],
                    )
        return found

    async def watch(self) -> AsyncIterator[Sequence[Instance]]:
        # `PRAGMA data_version` on a connection of its own changes whenever any other
        # connection (this process's writer included) commits; reading it costs microseconds
        # and takes no lock in WAL mode. It is read in a worker thread all the same (a thread
        # hop every 50 ms costs nothing): a file another process holds locked (while it
        # switches the file to WAL, say) would stall the event loop for the busy timeout. The
        # table is re-read only when it changed or an instance's expiry passed.
        await self.open()  # the file exists and is a registry: the reader may open it
        reader = await self._in_thread(self._reader)
        # A cancelled read goes on in its worker thread: the connection is closed only
        # under this lock, never while a read uses it (closing a sqlite3 connection under a
        # running statement crashed processes with SIGSEGV at shutdown).
        guard = threading.Lock()

        def read_version() -> int:
            with guard:
                return _data_version(reader)

        last: tuple[tuple[str, str, str], ...] | None = None
        version = -1
        next_expiry = 0.0
        try:
            while True:
                current = await self._in_thread(read_version)
                if current != version or time.time() >= next_expiry:
                    version = current
                    snapshot, next_expiry = await self._snapshot()
                    key = tuple((i.id, i.state.value, i.url) for i in snapshot)
                    if key != last:
                        last = key
                        yield snapshot
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            with guard:  # waits for a read still running (a PRAGMA: microseconds)
                reader.close()

    def _reader(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=0.1, isolation_level=None, check_same_thread=False
        )

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except sqlite3.Error as exc:
            raise DiscoveryError(f"registry {self.url}: {exc}") from exc

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None


def _data_version(reader: sqlite3.Connection) -> int:
    return int(reader.execute("PRAGMA data_version").fetchone()[0])
