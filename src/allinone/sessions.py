"""Chat sessions by id, each owned by the API key that made it, behind a small interface: SQLite on disk, or in
memory. A session is saved with its first turns, so a request that is refused never leaves one behind."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .chat import MESSAGE_TOKENS, ChatSession, Turn
from .errors import SessionLimit, SessionNotFound, SessionStoreError
from .files import private_file

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "ANONYMOUS",
    "Limits",
    "MemorySessions",
    "SessionInfo",
    "SessionStore",
    "SqliteSessions",
    "open_session",
    "open_store",
    "owner_of",
]

ANONYMOUS = ""  # the owner of every session on a server without API keys
DAY = 86400.0
PRUNE_EVERY = 3600.0  # seconds between retention sweeps while serving
SYNCHRONOUS = "FULL"  # a committed turn survives power loss: +3 ms a turn, <1% of one (benchmarks/session_sync.py)
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    n_turns INTEGER NOT NULL DEFAULT 0
);
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
OWNERS = """
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN n_turns INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET n_turns = (SELECT COUNT(*) FROM turns WHERE turns.session_id = sessions.id);
"""  # a store written before sessions had owners: its sessions belong to no key


def new_id() -> str:
    """A fresh session id: 128 random bits, not guessable."""
    return uuid.uuid4().hex


def owner_of(key: str) -> str:
    """What a session keeps of the API key that made it: a hash, never the key."""
    return hashlib.sha256(b"allinone session owner\0" + key.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    """What a store holds at most."""

    per_owner: int = 1000  # sessions of one API key
    turns: int = 1000  # turns (a message or a reply) of one session
    history: int = 1000  # most recent turns loaded for a reply: older ones cannot fit the context anyway

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        fit = settings.n_ctx // MESSAGE_TOKENS // 2 * 2  # every turn costs the model at least MESSAGE_TOKENS; pairs
        return cls(settings.max_sessions_per_key, settings.max_session_turns, min(fit, settings.max_session_turns))


def _unknown(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"unknown session '{session_id}'")


def _full(n_turns: int, limits: Limits) -> SessionLimit:
    return SessionLimit(
        f"the session holds {n_turns} turns, the most allowed is {limits.turns} (ALLINONE_MAX_SESSION_TURNS): "
        "start a new session"
    )


def _too_many(limits: Limits) -> SessionLimit:
    return SessionLimit(
        f"this API key already keeps {limits.per_owner} sessions, the most allowed (ALLINONE_MAX_SESSIONS_PER_KEY): "
        "delete one (DELETE /v1/sessions/{id}) or continue an existing one"
    )


class SessionStore(Protocol):
    """Where chat sessions live between requests. `owner` None (the operator) sees every session."""

    def open(self, session_id: str | None, owner: str) -> ChatSession:
        """For a reply: the owner's session with its most recent turns, or a new one (under `session_id`, else a
        fresh id) that is saved with its first turns. SessionNotFound when another owner has the id,
        SessionLimit when the session or the owner is full."""
        ...

    def get(self, session_id: str, owner: str | None = None) -> ChatSession:
        """The session with all its turns; SessionNotFound if there is none (of this owner)."""
        ...

    def create(self, session_id: str | None = None, owner: str = ANONYMOUS) -> ChatSession:
        """A new empty session, saved now, with this id if given (replacing any session of that id)."""
        ...

    def reset(self, session_id: str, owner: str | None = None) -> ChatSession:
        """Clear the session's history; SessionNotFound if there is none (of this owner)."""
        ...

    def delete(self, session_id: str, owner: str | None = None) -> bool:
        """Forget the session; False if there was none (of this owner)."""
        ...

    def close(self) -> None:
        """Write everything out and release the store (at shutdown)."""
        ...


def open_session(store: SessionStore, session_id: str | None, owner: str = ANONYMOUS) -> ChatSession:
    """The owner's session with this id, or a new one under that id (a fresh id when None)."""
    return store.open(session_id, owner)


class MemorySessions:
    """Sessions in a dict, least recently used dropped beyond `limit`; safe across threads."""

    def __init__(self, limit: int = 1000, limits: Limits | None = None) -> None:
        self.limit = limit
        self.limits = limits or Limits()
        self._sessions: OrderedDict[str, tuple[str, ChatSession]] = OrderedDict()
        self._owned: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def _find(self, session_id: str, owner: str | None) -> ChatSession:
        found = self._sessions.get(session_id)
        if found is None or (owner is not None and found[0] != owner):
            raise _unknown(session_id)
        self._sessions.move_to_end(session_id)
        return found[1]

    def open(self, session_id: str | None, owner: str) -> ChatSession:
        with self._lock:
            if session_id and session_id in self._sessions:
                session = self._find(session_id, owner)
                if len(session.turns) + 2 > self.limits.turns:
                    raise _full(len(session.turns), self.limits)
                return session
            if self._owned[owner] >= self.limits.per_owner:
                raise _too_many(self.limits)
        session = ChatSession(session_id or new_id())
        session.on_append = lambda _id, turns: self._save(session, owner, turns)
        return session

    def _save(self, session: ChatSession, owner: str, turns: list[Turn]) -> None:
        with self._lock:
            found = self._sessions.get(session.id)
            if found is not None and found[0] != owner:
                raise _unknown(session.id)
            stored = found[1] if found is not None else session
            if len(stored.turns) + len(turns) > self.limits.turns:
                raise _full(len(stored.turns), self.limits)
            if found is None:
                if self._owned[owner] >= self.limits.per_owner:
                    raise _too_many(self.limits)
                self._add(session.id, owner, session)
            elif stored is not session:  # the same new id opened twice at once: one conversation
                stored.turns.extend(turns)
            self._sessions.move_to_end(session.id)

    def _add(self, session_id: str, owner: str, session: ChatSession) -> None:
        self._sessions[session_id] = (owner, session)
        self._owned[owner] += 1
        while len(self._sessions) > self.limit:
            _, (gone, _) = self._sessions.popitem(last=False)
            self._owned[gone] -= 1

    def get(self, session_id: str, owner: str | None = None) -> ChatSession:
        with self._lock:
            return self._find(session_id, owner)

    def create(self, session_id: str | None = None, owner: str = ANONYMOUS) -> ChatSession:
        session = ChatSession(session_id or new_id())
        with self._lock:
            self._drop(session.id, None)
            self._add(session.id, owner, session)
        session.on_append = lambda _id, turns: self._save(session, owner, turns)
        return session

    def reset(self, session_id: str, owner: str | None = None) -> ChatSession:
        session = self.get(session_id, owner)
        session.reset()
        return session

    def delete(self, session_id: str, owner: str | None = None) -> bool:
        with self._lock:
            return self._drop(session_id, owner)

    def _drop(self, session_id: str, owner: str | None) -> bool:
        found = self._sessions.get(session_id)
        if found is None or (owner is not None and found[0] != owner):
            return False
        del self._sessions[session_id]
        self._owned[found[0]] -= 1
        return True

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SessionInfo:
    id: str
    created: float
    updated: float
    n_turns: int
    owner: str = ANONYMOUS


class SqliteSessions:
    """Sessions in one SQLite file (WAL): each completed turn pair is one transaction, so a crash loses
    at most the reply being generated. One connection behind a lock; safe across threads. Every SQLite
    failure (a full disk, say) is a SessionStoreError."""

    def __init__(
        self,
        path: Path,
        retention_days: float = 0,
        limits: Limits | None = None,
        synchronous: str = SYNCHRONOUS,
    ) -> None:
        self.path = path
        self.retention_days = retention_days
        self.limits = limits or Limits()
        self.synchronous = synchronous
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
                db.execute(f"PRAGMA synchronous={self.synchronous}")
                db.execute("PRAGMA foreign_keys=ON")
                db.executescript(SCHEMA)
                if "owner" not in {row[1] for row in db.execute("PRAGMA table_info(sessions)")}:
                    db.executescript(f"BEGIN; {OWNERS} COMMIT;")
                db.execute("CREATE INDEX IF NOT EXISTS sessions_owner ON sessions(owner)")
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
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _store_errors():
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _store_errors():
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT (a full disk) may have ended it already
                    db.execute("ROLLBACK")
                raise

    def _row(self, db: sqlite3.Connection, session_id: str) -> tuple[str, int] | None:
        """The session's owner and number of turns; None if there is no such session."""
        row = db.execute("SELECT owner, n_turns FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def _owned_by(self, db: sqlite3.Connection, session_id: str, owner: str | None) -> tuple[str, int]:
        """The session's owner and number of turns; SessionNotFound unless it exists and is the owner's."""
        row = self._row(db, session_id)
        if row is None or (owner is not None and row[0] != owner):
            raise _unknown(session_id)
        return row

    def _room_for_one_more(self, db: sqlite3.Connection, owner: str) -> None:
        (n,) = db.execute("SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)).fetchone()
        if n >= self.limits.per_owner:
            raise _too_many(self.limits)

    def _turns(self, db: sqlite3.Connection, session_id: str, last: int | None = None) -> list[Turn]:
        rows = db.execute(
            "SELECT role, content, sentiment, at FROM turns WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
            (session_id, -1 if last is None else last),
        ).fetchall()
        return [Turn(role, content, sentiment, at) for role, content, sentiment, at in reversed(rows)]

    def _session(self, session_id: str, owner: str, turns: list[Turn] | None = None) -> ChatSession:
        session = ChatSession(session_id, turns or [])
        session.on_append = lambda sid, new: self._append(sid, new, owner)
        return session

    def open(self, session_id: str | None, owner: str) -> ChatSession:
        with self._read() as db:
            if not session_id or self._row(db, session_id) is None:
                self._room_for_one_more(db, owner)
                return self._session(session_id or new_id(), owner)
            _, n_turns = self._owned_by(db, session_id, owner)
            if n_turns + 2 > self.limits.turns:
                raise _full(n_turns, self.limits)
            return self._session(session_id, owner, self._turns(db, session_id, self.limits.history))

    def get(self, session_id: str, owner: str | None = None) -> ChatSession:
        with self._read() as db:
            found_owner, _ = self._owned_by(db, session_id, owner)
            return self._session(session_id, found_owner, self._turns(db, session_id))

    def create(self, session_id: str | None = None, owner: str = ANONYMOUS) -> ChatSession:
        session = self._session(session_id or new_id(), owner)
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, 0)", (session.id, now, now, owner))
        self._maybe_prune(now)
        return session

    def reset(self, session_id: str, owner: str | None = None) -> ChatSession:
        with self._transaction() as db:
            found_owner, _ = self._owned_by(db, session_id, owner)
            db.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            db.execute("UPDATE sessions SET updated = ?, n_turns = 0 WHERE id = ?", (time.time(), session_id))
        return self._session(session_id, found_owner)

    def delete(self, session_id: str, owner: str | None = None) -> bool:
        with self._transaction() as db:
            mine = "" if owner is None else " AND owner = ?"
            params = (session_id,) if owner is None else (session_id, owner)
            return db.execute(f"DELETE FROM sessions WHERE id = ?{mine}", params).rowcount > 0

    def summaries(self) -> list[SessionInfo]:
        """Every session, most recently updated first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT id, created, updated, n_turns, owner FROM sessions ORDER BY updated DESC"
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

    def _append(self, session_id: str, turns: list[Turn], owner: str) -> None:
        now = time.time()
        with self._transaction() as db:
            if self._row(db, session_id) is None:  # its first turns (or it was deleted during the reply)
                self._room_for_one_more(db, owner)
                db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, 0)", (session_id, now, now, owner))
            _, n_turns = self._owned_by(db, session_id, owner)
            if n_turns + len(turns) > self.limits.turns:
                raise _full(n_turns, self.limits)
            last_seq = "SELECT COALESCE(MAX(seq), -1) FROM turns WHERE session_id = ?"
            (last,) = db.execute(last_seq, (session_id,)).fetchone()
            db.executemany(
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                [(session_id, last + 1 + i, t.role, t.content, t.sentiment, t.at) for i, t in enumerate(turns)],
            )
            db.execute(
                "UPDATE sessions SET updated = ?, n_turns = n_turns + ? WHERE id = ?", (now, len(turns), session_id)
            )
        self._maybe_prune(now)


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise SessionStoreError(f"the session store failed: {e}") from e


def open_store(settings: Settings) -> SessionStore:
    """The store the settings choose: `sqlite` (durable, under ALLINONE_HOME) or `memory`."""
    limits = Limits.of(settings)
    if settings.session_store == "memory":
        return MemorySessions(settings.max_sessions, limits)
    return SqliteSessions(settings.home / "sessions.sqlite3", settings.session_retention_days, limits)
