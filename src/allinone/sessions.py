"""Chat sessions by id: a bounded in-memory store behind a small interface (get / create / reset / delete)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from .chat import ChatSession
from .errors import SessionNotFound

__all__ = ["MemorySessions", "SessionStore", "open_session"]


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


def open_session(store: SessionStore, session_id: str | None) -> ChatSession:
    """The session with this id, or a new one under that id (a fresh id when None)."""
    if session_id:
        try:
            return store.get(session_id)
        except SessionNotFound:
            pass
    return store.create(session_id)
