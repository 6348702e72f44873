"""The in-memory session store: get / create / reset / delete, bounded least-recently-used."""

from __future__ import annotations

import pytest

from allinone.chat import Turn
from allinone.errors import SessionNotFound
from allinone.sessions import MemorySessions, open_session


def test_created_session_is_found_by_its_id_and_reset_keeps_it() -> None:
    store = MemorySessions()
    s = store.create("a")
    s.turns.append(Turn("user", "hi"))
    assert store.get("a") is s
    assert store.reset("a").turns == [] and store.get("a") is s


def test_unknown_and_deleted_sessions_are_not_found() -> None:
    store = MemorySessions()
    store.create("a")
    assert store.delete("a") is True and store.delete("a") is False
    with pytest.raises(SessionNotFound):
        store.get("a")
    with pytest.raises(SessionNotFound):
        store.reset("a")


def test_least_recently_used_session_goes_first_beyond_the_limit() -> None:
    store = MemorySessions(limit=2)
    store.create("a")
    store.create("b")
    store.get("a")  # a is now more recent than b
    store.create("c")
    assert len(store) == 2
    store.get("a")
    with pytest.raises(SessionNotFound):
        store.get("b")


def test_open_session_continues_or_creates_under_the_given_id() -> None:
    store = MemorySessions()
    first = open_session(store, "x")
    assert first.id == "x" and open_session(store, "x") is first
    fresh = open_session(store, None)
    assert fresh.id and fresh.id != "x" and store.get(fresh.id) is fresh
