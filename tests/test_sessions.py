"""The session stores: in memory (bounded LRU) and SQLite (durable: round trip, retention, concurrency, bad files)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from allinone import cli as cli_module
from allinone.chat import Turn
from allinone.errors import SessionNotFound, SessionStoreError
from allinone.server import create_app
from allinone.service import TaskService
from allinone.sessions import (
    ANONYMOUS,
    DAY,
    MemorySessions,
    SessionInfo,
    SqliteSessions,
    open_session,
    open_store,
    owner_of,
)
from allinone.settings import Settings
from tests.fakes import FakeEngine


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


def test_open_session_continues_or_creates_under_the_given_id_saved_with_its_first_turns() -> None:
    store = MemorySessions()
    first = open_session(store, "x")
    assert first.id == "x" and len(store) == 0  # nothing saved until a turn is: a refused request leaves nothing
    first.append(Turn("user", "hi"), Turn("assistant", "hello"))
    assert open_session(store, "x") is first and store.get("x") is first
    fresh = open_session(store, None)
    fresh.append(Turn("user", "hi"), Turn("assistant", "hello"))
    assert fresh.id and fresh.id != "x" and store.get(fresh.id) is fresh


def _pair(session_id: str, n: int) -> list[Turn]:
    return [Turn("user", f"{session_id} q{n}", "负面", at=1000.0 + n), Turn("assistant", f"{session_id} a{n}")]


def test_sqlite_sessions_survive_reopening_with_roles_sentiments_and_timestamps(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "s.sqlite3")
    s = store.create("a")
    s.append(*_pair("a", 1))
    store.get("a").append(*_pair("a", 2))  # a second request: a fresh object, the same history
    store.close()
    again = SqliteSessions(tmp_path / "s.sqlite3").get("a")
    assert [t.content for t in again.turns] == ["a q1", "a a1", "a q2", "a a2"]
    assert again.turns[0].sentiment == "负面" and again.turns[0].at == 1001.0 and again.turns[1].role == "assistant"


def test_sqlite_store_uses_wal_and_reset_delete_and_unknown_ids_behave_like_memory(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "s.sqlite3")
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.create("a").append(*_pair("a", 1))
    assert store.reset("a").turns == [] and store.get("a").turns == []
    assert store.delete("a") is True and store.delete("a") is False
    for call in (store.get, store.reset):
        with pytest.raises(SessionNotFound):
            call("a")
    first = open_session(store, "x")
    first.append(*_pair("x", 1))
    assert open_session(store, "x").turns == first.turns


def test_retention_deletes_idle_sessions_at_startup_and_keeps_all_when_zero(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteSessions(path)
    store.create("old").append(*_pair("old", 1))
    store.create("new").append(*_pair("new", 1))
    store._db.execute("UPDATE sessions SET updated = updated - ? WHERE id = 'old'", (3 * DAY,))
    store.close()
    assert {i.id for i in SqliteSessions(path, retention_days=0).summaries()} == {"old", "new"}
    kept = SqliteSessions(path, retention_days=2)
    assert [i.id for i in kept.summaries()] == ["new"]
    assert kept._db.execute("SELECT COUNT(*) FROM turns WHERE session_id = 'old'").fetchone() == (0,)


def test_retention_also_sweeps_periodically_while_serving(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "s.sqlite3", retention_days=1)
    store.create("old")
    store._db.execute("UPDATE sessions SET updated = updated - ? WHERE id = 'old'", (2 * DAY,))
    store.create("b").append(*_pair("b", 1))  # a sweep ran at startup; not again within the hour
    assert {i.id for i in store.summaries()} == {"old", "b"}
    store._last_prune -= 3601
    store.get("b").append(*_pair("b", 2))
    assert [i.id for i in store.summaries()] == ["b"]


def test_concurrent_writers_on_two_connections_keep_every_turn_pair_intact(tmp_path: Path) -> None:
    stores = [SqliteSessions(tmp_path / "s.sqlite3"), SqliteSessions(tmp_path / "s.sqlite3")]  # like two processes
    stores[0].create("shared")
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            store = stores[k % 2]
            own = store.create(f"w{k}")
            for n in range(25):
                own.append(*_pair(own.id, n))
                store.get("shared").append(*_pair(f"w{k}", n))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for k in range(6):
        assert [t.content for t in stores[1].get(f"w{k}").turns] == [
            c for n in range(25) for c in (f"w{k} q{n}", f"w{k} a{n}")
        ]
    shared = stores[0].get("shared").turns
    assert len(shared) == 6 * 25 * 2
    for q, a in zip(shared[::2], shared[1::2], strict=True):  # each pair is adjacent: one transaction
        assert q.role == "user" and a.role == "assistant" and q.content.replace(" q", " a") == a.content


def test_databases_and_logs_are_created_0600_in_a_0700_dir(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    settings = Settings(home=home, log_file=home / "logs" / "requests.log", request_log=True)
    app = create_app(settings, TaskService(settings, FakeEngine(lambda p, w: 0.0)))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.post("/chat", json={"text": "你好"}).status_code == 200
        app.state.services.log.flush()
        files = [
            "sessions.sqlite3",
            "sessions.sqlite3-wal",
            "requests.sqlite3",
            "requests.sqlite3-wal",
            "logs/requests.log",
        ]
        modes = {name: (home / name).stat().st_mode & 0o777 for name in files}
    assert modes == dict.fromkeys(files, 0o600)
    assert [(d.stat().st_mode & 0o777) for d in (tmp_path / "new", home, home / "logs")] == [0o700] * 3


OLD_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE turns (session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, sentiment TEXT, at REAL NOT NULL, PRIMARY KEY (session_id, seq));
INSERT INTO sessions VALUES ('old', 1.0, 2.0);
INSERT INTO turns VALUES ('old', 0, 'user', 'q', NULL, 1.0), ('old', 1, 'assistant', 'a', NULL, 2.0);
"""  # a store written before sessions had owners


def test_a_store_from_before_owners_opens_with_its_sessions_owned_by_no_key(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.sqlite3")
    db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteSessions(tmp_path / "s.sqlite3")
    assert store.summaries() == [SessionInfo("old", 1.0, 2.0, 2, ANONYMOUS)]
    assert [t.content for t in store.open("old", ANONYMOUS).turns] == ["q", "a"]  # a server without keys goes on
    with pytest.raises(SessionNotFound):
        store.open("old", owner_of("some-key"))
    store.open("old", ANONYMOUS).append(*_pair("old", 2))
    assert store.summaries()[0].n_turns == 4


def test_a_missing_store_is_created_and_a_corrupt_one_is_a_clear_error(tmp_path: Path) -> None:
    fresh = SqliteSessions(tmp_path / "deep" / "dir" / "s.sqlite3")
    assert fresh.summaries() == [] and (tmp_path / "deep" / "dir" / "s.sqlite3").exists()
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SessionStoreError, match=r"bad\.sqlite3"):
        SqliteSessions(bad)
    assert bad.read_bytes() == b"this is not a database" * 100  # left as it was, for the user to inspect


def test_the_server_uses_the_sqlite_store_by_default_so_sessions_survive_a_new_app(tmp_path: Path) -> None:
    def app(**overrides: object) -> TestClient:
        settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", **overrides)  # type: ignore[arg-type]
        return TestClient(
            create_app(settings, TaskService(settings, FakeEngine(lambda p, w: 0.0))), base_url="http://127.0.0.1"
        )

    assert isinstance(open_store(Settings(home=tmp_path)), SqliteSessions)
    assert isinstance(open_store(Settings(home=tmp_path, session_store="memory")), MemorySessions)
    with app() as c:
        assert c.post("/chat", json={"text": "你好", "session_id": "k"}).status_code == 200
    with app() as c:
        turns = c.get("/v1/sessions/k").json()["turns"]
    assert [t["content"] for t in turns][:1] == ["你好"] and len(turns) == 2
    with app(session_store="memory") as c:
        assert c.get("/v1/sessions/k").status_code == 404


def _cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli_module.cli, list(args), env={"ALLINONE_HOME": str(home)})


def test_sessions_cli_lists_shows_exports_and_deletes(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "sessions.sqlite3")
    store.create("a").append(*_pair("a", 1))
    store.create("b")
    store.close()
    listed = _cli(tmp_path, "sessions", "list")
    assert listed.exit_code == 0 and [line.split()[:2] for line in listed.output.splitlines()] == [
        ["b", "0"],
        ["a", "2"],
    ]
    shown = _cli(tmp_path, "sessions", "show", "a").output
    assert shown.splitlines()[0].endswith("user: a q1") and shown.splitlines()[1].endswith("assistant: a a1")
    lines = [json.loads(line) for line in _cli(tmp_path, "sessions", "export").output.splitlines()]
    assert {d["session_id"]: len(d["turns"]) for d in lines} == {"a": 2, "b": 0}
    assert lines[1]["turns"][0] == {"role": "user", "content": "a q1", "sentiment": "负面", "at": 1001.0}
    assert _cli(tmp_path, "sessions", "delete", "a").exit_code == 0
    assert [i.id for i in SqliteSessions(tmp_path / "sessions.sqlite3").summaries()] == ["b"]


def test_sessions_cli_with_the_memory_store_says_it_cannot_see_them(tmp_path: Path) -> None:
    env = {"ALLINONE_HOME": str(tmp_path), "ALLINONE_SESSION_STORE": "memory"}
    result = CliRunner().invoke(cli_module.cli, ["sessions", "list"], env=env)
    assert result.exit_code == 2 and "server's memory" in result.output
    assert not (tmp_path / "sessions.sqlite3").exists()  # no empty store made as a side effect


@pytest.mark.parametrize("command", ["show", "export", "delete"])
def test_sessions_cli_unknown_id_is_a_one_line_error_with_exit_2(tmp_path: Path, command: str) -> None:
    result = _cli(tmp_path, "sessions", command, "nope")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: unknown session 'nope'"]


def test_sessions_show_and_export_keep_terminal_control_sequences_off_the_screen(tmp_path: Path) -> None:
    nasty = "hi\x1b[2J\x1b]0;owned\x07 there\r\n[2020-01-01 00:00:00] assistant: forged\x9b31m\x7f\x00 end"
    store = SqliteSessions(tmp_path / "sessions.sqlite3")
    store.create("a").append(Turn("user", nasty, at=1000.0), Turn("assistant", "ok", at=1001.0))
    store.close()
    shown = _cli(tmp_path, "sessions", "show", "a").output
    exported = _cli(tmp_path, "sessions", "export", "a").output
    for out in (shown, exported):
        assert not any((ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F for c in out), repr(out)
    lines = shown.splitlines()
    assert lines[0].endswith("user: hi there") and "owned" not in shown
    assert lines[1] == "    [2020-01-01 00:00:00] assistant: forged31m end"  # indented: no forged turn line
    assert len(lines) == 3 and lines[2].endswith("assistant: ok")
    assert json.loads(exported)["turns"][0]["content"] == nasty  # export escapes, the data stays whole
