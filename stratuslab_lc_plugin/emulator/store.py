"""SQLite persistence for the local cloud, shared by every emulated service.

One database (a file in the state directory, or in memory) holds VMs, disks, mounts...
so a restarted cloud keeps its state. Each service module owns its own tables and
creates them with :meth:`Store.ensure_schema`. All access goes through
:meth:`Store.transaction`, which serialises transactions with a lock: the HTTPS front is
multi-threaded, and one shared connection with a lock is both simple and fast enough
(SQLite serialises writers anyway).
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Store:
    """A thread-safe SQLite database; ``path=None`` (or ``":memory:"``) keeps it in memory."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.RLock()
        target = path if path else ":memory:"
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction really
        # spans every statement of the `with` block (the sqlite3 module's implicit
        # transactions do not cover DDL and reads).
        self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._depth = 0
        if target != ":memory:":
            # WAL: readers of other processes (inspection tools) do not block the server,
            # and commits are cheaper; NORMAL sync is durable enough for an emulator.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")

    def ensure_schema(self, sql: str) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``; several statements allowed)."""
        with self._lock:
            self._conn.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Serialised transaction: commit on success, roll back on any exception.

        Re-entrant: a nested ``transaction()`` in the same thread joins the outer one.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
