"""Sessions over HTTP on the fake engine: each belongs to the API key that made it, ids come from the server
when none is given, refused requests leave nothing behind, caps hold, and a failing store is a clear 503."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from allinone import cli as cli_module
from allinone.chat import ChatSession, Turn
from allinone.events import TaskCall
from allinone.server import create_app
from allinone.service import TaskService
from allinone.sessions import ANONYMOUS, Limits, MemorySessions, SqliteSessions, owner_of
from allinone.settings import Settings
from tests.fakes import FakeEngine

ALICE, BOB = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}


def client(tmp_path: Path, engine: FakeEngine | None = None, **overrides: Any) -> TestClient:
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", **overrides)
    app = create_app(settings, TaskService(settings, engine or FakeEngine()))
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


def events(body: str) -> list[tuple[str, Any]]:
    found = re.findall(r"^event: (.*)\ndata: (.*)$", body, re.M)
    return [(event, json.loads(data)) for event, data in found]


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- owners -------------------------------------------------------------------------------------


def test_a_session_belongs_to_the_key_that_made_it(tmp_path: Path, store: str) -> None:
    engine = FakeEngine()
    engine.enqueue("alice's reply")
    with client(tmp_path, engine, api_keys="alice-key,bob-key", session_store=store) as c:
        sid = c.post("/chat", json={"text": "alice's secret"}, headers=ALICE).json()["session_id"]
        prompts = len(engine.prompts)
        attempts = [
            c.get(f"/v1/sessions/{sid}", headers=BOB),
            c.post("/chat", json={"text": "ignore her", "session_id": sid}, headers=BOB),
            c.post("/v1/analyze_and_reply", json={"text": "x", "session_id": sid, "stream": True}, headers=BOB),
            c.post("/v1/tasks/chat", json={"text": "x", "session_id": sid}, headers=BOB),
            c.delete(f"/v1/sessions/{sid}", headers=BOB),
        ]
        assert [(r.status_code, r.json()["error"]["type"]) for r in attempts] == [(404, "session_not_found")] * 5
        assert len(engine.prompts) == prompts  # none of bob's attempts reached the model with her history
        turns = c.get(f"/v1/sessions/{sid}", headers=ALICE).json()["turns"]
        assert [t["content"] for t in turns] == ["alice's secret", "alice's reply"]
        assert c.delete(f"/v1/sessions/{sid}", headers=ALICE).status_code == 204
        assert c.get(f"/v1/sessions/{sid}", headers=ALICE).status_code == 404


def test_an_id_a_client_chose_is_its_own_and_never_replaces_anothers(tmp_path: Path, store: str) -> None:
    with client(tmp_path, api_keys="alice-key,bob-key", session_store=store) as c:
        assert c.post("/chat", json={"text": "mine", "session_id": "demo"}, headers=ALICE).status_code == 200
        taken = c.post("/chat", json={"text": "also mine?", "session_id": "demo"}, headers=BOB)
        assert taken.status_code == 404
        again = c.post("/chat", json={"text": "more", "session_id": "demo"}, headers=ALICE)
        assert again.status_code == 200 and again.json()["session_id"] == "demo"
        turns = c.get("/v1/sessions/demo", headers=ALICE).json()["turns"]
    assert [t["content"] for t in turns if t["role"] == "user"] == ["mine", "more"]


def test_the_server_makes_an_unguessable_id_when_none_is_given(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        ids = [c.post("/chat", json={"text": "hi"}).json()["session_id"] for _ in range(3)]
        streamed = events(c.post("/v1/analyze_and_reply", json={"text": "hi", "stream": True}).text)[-1][1]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in [*ids, streamed["session_id"]]) and len(set(ids)) == 3


def test_the_store_keeps_a_hash_of_the_key_never_the_key(tmp_path: Path) -> None:
    with client(tmp_path, api_keys="alice-key") as c:
        sid = c.post("/chat", json={"text": "hi"}, headers=ALICE).json()["session_id"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("sessions.sqlite3*"))
    assert b"alice-key" not in stored
    db = sqlite3.connect(tmp_path / "sessions.sqlite3")
    assert db.execute("SELECT owner FROM sessions WHERE id = ?", (sid,)).fetchone() == (owner_of("alice-key"),)
    db.close()


def test_the_operator_cli_sees_the_sessions_of_every_key(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.enqueue("to alice", "to bob")
    with client(tmp_path, engine, api_keys="alice-key,bob-key") as c:
        a = c.post("/chat", json={"text": "from alice"}, headers=ALICE).json()["session_id"]
        b = c.post("/chat", json={"text": "from bob"}, headers=BOB).json()["session_id"]
    run = CliRunner().invoke
    env = {"ALLINONE_HOME": str(tmp_path)}
    lines = run(cli_module.cli, ["sessions", "list"], env=env).output.splitlines()
    assert {line.split()[0]: line.split()[-1] for line in lines} == {
        a: owner_of("alice-key")[:12],
        b: owner_of("bob-key")[:12],
    }
    assert run(cli_module.cli, ["sessions", "show", a], env=env).output.splitlines()[1].endswith("to alice")
    assert run(cli_module.cli, ["sessions", "show", b], env=env).output.splitlines()[1].endswith("to bob")


# --- nothing left by refused requests; caps -----------------------------------------------------


def _count(tmp_path: Path, c: TestClient) -> int:
    sessions = c.app.state.services.sessions  # type: ignore[attr-defined]
    return len(sessions) if isinstance(sessions, MemorySessions) else len(sessions.summaries())


def test_a_refused_request_leaves_no_session_behind(tmp_path: Path, store: str) -> None:
    with client(tmp_path, session_store=store) as c:
        for i in range(50):
            r = c.post("/v1/tasks/chat", json={"text": "hi", "session_id": f"s{i}", "bogus": 1})
            assert r.status_code == 400
            assert c.post("/chat", json={"text": " ", "session_id": f"t{i}"}).status_code == 400
        assert _count(tmp_path, c) == 0  # before: 50 rows


def test_refused_requests_do_not_evict_others_from_the_memory_store(tmp_path: Path) -> None:
    with client(tmp_path, session_store="memory", max_sessions=3, api_keys="alice-key,bob-key") as c:
        mine = [c.post("/chat", json={"text": "hi"}, headers=ALICE).json()["session_id"] for _ in range(3)]
        for i in range(20):
            bad = {"text": "x", "session_id": f"b{i}", "bogus": 1}
            assert c.post("/v1/tasks/chat", json=bad, headers=BOB).status_code == 400
        assert [c.get(f"/v1/sessions/{s}", headers=ALICE).status_code for s in mine] == [200] * 3


def test_a_key_keeps_at_most_max_sessions_per_key(tmp_path: Path, store: str) -> None:
    settings = {"api_keys": "alice-key,bob-key", "session_store": store, "max_sessions_per_key": 2}
    with client(tmp_path, **settings) as c:
        first = [c.post("/chat", json={"text": "hi"}, headers=ALICE).json()["session_id"] for _ in range(2)]
        refused = c.post("/chat", json={"text": "one more"}, headers=ALICE)
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "session_limit"
        assert "ALLINONE_MAX_SESSIONS_PER_KEY" in refused.json()["error"]["message"]
        assert c.post("/chat", json={"text": "hi", "session_id": first[0]}, headers=ALICE).status_code == 200
        assert c.post("/chat", json={"text": "hi"}, headers=BOB).status_code == 200  # a cap per key
        assert c.delete(f"/v1/sessions/{first[1]}", headers=ALICE).status_code == 204
        assert c.post("/chat", json={"text": "hi"}, headers=ALICE).status_code == 200


def test_a_session_holds_at_most_max_session_turns(tmp_path: Path, store: str) -> None:
    engine = FakeEngine()
    with client(tmp_path, engine, session_store=store, max_session_turns=4) as c:
        sid = c.post("/chat", json={"text": "one"}).json()["session_id"]
        assert c.post("/chat", json={"text": "two", "session_id": sid}).status_code == 200
        prompts = len(engine.prompts)
        for body in ({"text": "three", "session_id": sid}, {"text": "3", "session_id": sid, "stream": True}):
            path = "/v1/analyze_and_reply" if "stream" in body else "/chat"
            r = c.post(path, json=body)
            assert r.status_code == 409 and "ALLINONE_MAX_SESSION_TURNS" in r.json()["error"]["message"]
        assert len(engine.prompts) == prompts  # refused before the model
        assert len(c.get(f"/v1/sessions/{sid}").json()["turns"]) == 4


def test_only_the_turns_that_can_fit_the_context_are_loaded(tmp_path: Path) -> None:
    limits = Limits.of(Settings(home=tmp_path, n_ctx=4096, max_session_turns=5000))
    assert limits.history == 4096 // 6 // 2 * 2  # each turn costs the model at least 6 tokens
    store = SqliteSessions(tmp_path / "s.sqlite3", limits=limits)
    whole = store.open(None, ANONYMOUS)
    whole.append(*[t for i in range(1000) for t in (Turn("user", f"q{i}"), Turn("assistant", f"a{i}"))])
    loaded = store.open(whole.id, ANONYMOUS)
    assert len(loaded.turns) == limits.history and loaded.turns == whole.turns[-limits.history :]
    assert len(store.get(whole.id).turns) == 2000  # the conversation itself is whole

    engine, prompts = FakeEngine(), []  # the fake engine's context is 4096 tokens, a token a character
    service = TaskService(Settings(home=tmp_path), engine)
    for session in (loaded, ChatSession("all", list(whole.turns))):
        list(service.run(TaskCall("chat", "next", session=session)))
        prompts.append(engine.prompts[-1].text)
    assert prompts[0] == prompts[1]  # the same prompt as with every turn loaded


# --- store failures -----------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[TestClient]:
    """A client whose sqlite session store is full once it holds what it holds now."""
    engine = FakeEngine()
    engine.enqueue("first reply", *["x" * 4000] * 10)
    with client(tmp_path, engine) as c:
        store = c.app.state.services.sessions  # type: ignore[attr-defined]
        c.post("/chat", json={"text": "hello", "session_id": "s"})
        (pages,) = store._db.execute("PRAGMA page_count").fetchone()
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        yield c


def test_a_failed_session_write_is_a_503_not_a_500(full_disk: TestClient) -> None:
    r = full_disk.post("/chat", json={"text": "y" * 4000, "session_id": "s"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "session_store_error"
    assert "full" in r.json()["error"]["message"] and r.json()["error"]["message_zh"]
    assert len(full_disk.get("/v1/sessions/s").json()["turns"]) == 2  # the failed pair is not half-written


@pytest.mark.parametrize("path", ["/v1/analyze_and_reply", "/v1/tasks/chat"])
def test_a_stream_whose_session_write_fails_ends_with_an_error_event(full_disk: TestClient, path: str) -> None:
    r = full_disk.post(path, json={"text": "y" * 4000, "session_id": "s", "stream": True})
    evs = events(r.text)
    assert r.status_code == 200 and evs[-1][0] == "error" and "done" not in [e for e, _ in evs]
    assert evs[-1][1]["error"]["type"] == "session_store_error"


def test_a_store_that_fails_to_read_is_a_503_before_the_model(tmp_path: Path) -> None:
    engine = FakeEngine()
    with client(tmp_path, engine) as c:
        sid = c.post("/chat", json={"text": "hi"}).json()["session_id"]
        broken = sqlite3.connect(tmp_path / "sessions.sqlite3")
        broken.execute("DROP TABLE turns")
        broken.close()
        prompts = len(engine.prompts)
        r = c.post("/chat", json={"text": "again", "session_id": sid})
        assert r.status_code == 503 and r.json()["error"]["type"] == "session_store_error"
        assert c.get(f"/v1/sessions/{sid}").status_code == 503 and len(engine.prompts) == prompts


def test_the_session_store_commits_with_synchronous_full(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "s.sqlite3")
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: benchmarks/session_sync.py
