"""Chat sessions by id behind a small interface (get / create / reset / delete): SQLite on disk, or in memory."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .chat import ChatSession, Turn
from .errors import SessionNotFound, SessionStoreError
from .files import private_file

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["MemorySessions", "SessionInfo", "SessionStore", "SqliteSessions", "open_session", "open_store"]

DAY = 86400.0
PRUNE_EVERY = 3600.0  # seconds between retention sweeps while serving
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    sentiment TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated);
"""


class SessionStore(Protocol):
    """Where chat sessions live between requests."""

    def get(self, session_id: str) -> ChatSession:
        """The session with this id; SessionNotFound if there is none."""
        ...

    def create(self, session_id: str | None = None) -> ChatSession:
        """A new empty session, with this id if given (replacing any session of that id)."""
        ...

    def reset(self, session_id: str) -> ChatSession:
        """Clear the session's history; SessionNotFound if there is none."""
        ...

    def delete(self, session_id: str) -> bool:
        """Forget the session; False if there was none."""
        ...

    def close(self) -> None:
        """Write everything out and release the store (at shutdown)."""
        ...


class MemorySessions:
    """Sessions in a dict, least recently used dropped beyond `limit`; safe across threads."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._sessions: OrderedDict[str, ChatSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> ChatSession:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFound(f"unknown session '{session_id}'")
            self._sessions.move_to_end(session_id)
            return session

    def create(self, session_id: str | None = None) -> ChatSession:
        session = ChatSession(session_id) if session_id else ChatSession()
        with self._lock:
            self._sessions[session.id] = session
            self._sessions.move_to_end(session.id)
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        return session

    def reset(self, session_id: str) -> ChatSession:
        session = self.get(session_id)
        session.reset()
        return session

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def close(self) -> None:
        pass


def open_session(store: SessionStore, session_id: str | None) -> ChatSession:
    """The session with this id, or a new one under that id (a fresh id when None)."""
    if session_id:
        try:
            return store.get(session_id)
        except SessionNotFound:
            pass
    return store.create(session_id)


@dataclass(frozen=True)
class SessionInfo:
    id: str
    created: float
    updated: float
    n_turns: int


class SqliteSessions:
    """Sessions in one SQLite file (WAL): each completed turn pair is one transaction, so a crash loses
    at most the reply being generated. One connection behind a lock; safe across threads."""

    def __init__(self, path: Path, retention_days: float = 0) -> None:
        self.path = path
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self._conn: sqlite3.Connection | None = None
        self._db  # noqa: B018 - open now, so that a bad file is an error at startup
        self.prune()

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (again after `close`, when an app is started anew)."""
        if self._conn is None:
            try:
                private_file(self.path, tighten=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                db.executescript(SCHEMA)
            except (sqlite3.Error, OSError) as e:
                msg = f"cannot open the session store {self.path}: {e}; move it aside to start anew"
                raise SessionStoreError(msg) from None
            self._conn = db
        return self._conn

    def close(self) -> None:
        """Close the connection; the last one to close checkpoints the WAL into the file and removes it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, session_id: str) -> ChatSession:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
            rows = self._db.execute(
                "SELECT role, content, sentiment, at FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)
            ).fetchall()
        if found is None:
            raise SessionNotFound(f"unknown session '{session_id}'")
        turns = [Turn(role, content, sentiment, at) for role, content, sentiment, at in rows]
        return ChatSession(session_id, turns, on_append=self._append)

    def create(self, session_id: str | None = None) -> ChatSession:
        session = ChatSession(session_id) if session_id else ChatSession()
        session.on_append = self._append
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (session.id, now, now))
        self._maybe_prune(now)
        return session

    def reset(self, session_id: str) -> ChatSession:
        with self._transaction() as db:
            db.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            updated = db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), session_id)).rowcount
        if not updated:
            raise SessionNotFound(f"unknown session '{session_id}'")
        return ChatSession(session_id, on_append=self._append)

    def delete(self, session_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

    def summaries(self) -> list[SessionInfo]:
        """Every session, most recently updated first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.created, s.updated, COUNT(t.seq) FROM sessions s "
                "LEFT JOIN turns t ON t.session_id = s.id GROUP BY s.id ORDER BY s.updated DESC"
            ).fetchall()
        return [SessionInfo(*row) for row in rows]

    def prune(self, now: float | None = None) -> int:
        """Delete sessions not updated within the retention period; the number deleted (0 when keeping all)."""
        now = time.time() if now is None else now
        self._last_prune = now
        if self.retention_days <= 0:
            return 0
        with self._transaction() as db:
            return db.execute("DELETE FROM sessions WHERE updated < ?", (now - self.retention_days * DAY,)).rowcount

    def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune >= PRUNE_EVERY:
            self.prune(now)

    def _append(self, session_id: str, turns: list[Turn]) -> None:
        now = time.time()
        with self._transaction() as db:
            # a session deleted while its reply was generated comes back with the new turns only
            db.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?)", (session_id, now, now))
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
            last_seq = "SELECT COALESCE(MAX(seq), -1) FROM turns WHERE session_id = ?"
            (last,) = db.execute(last_seq, (session_id,)).fetchone()
            db.executemany(
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                [(session_id, last + 1 + i, t.role, t.content, t.sentiment, t.at) for i, t in enumerate(turns)],
            )
        self._maybe_prune(now)


def open_store(settings: Settings) -> SessionStore:
    """The store the settings choose: `sqlite` (durable, under ALLINONE_HOME) or `memory`."""
    if settings.session_store == "memory":
        return MemorySessions(settings.max_sessions)
    return SqliteSessions(settings.home / "sessions.sqlite3", settings.session_retention_days)
