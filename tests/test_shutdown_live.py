"""Graceful shutdown of a real `allinone serve` process on SIGTERM: it stops accepting at once, lets the
stream in flight finish (or cuts it at ALLINONE_SHUTDOWN_TIMEOUT), closes the session store and exits 0."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_sessions_live import server

pytestmark = pytest.mark.model

ESSAY = "请写一篇八百字的作文，题目是《我的家乡》，要写得很详细。"
REFUSE_TIMEOUT = 20.0  # bound on waiting for the listening socket to close


class Reader(threading.Thread):
    """Reads one streamed chat reply in the background: its events, and when the first token came."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.events: list[str] = []
        self.first_token = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/v1/tasks/chat", json=self.body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        self.events.append(line.removeprefix("event: "))
                        if line == "event: token":
                            self.first_token.set()
        except httpx.HTTPError as e:  # the connection cut at the drain bound
            self.error = e

    def tokens(self) -> int:
        return self.events.count("token")


def _wait_refused(url: str) -> None:
    """Until a new connection is refused (the listening socket is closed)."""
    deadline = time.monotonic() + REFUSE_TIMEOUT
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
        except httpx.ConnectError:
            return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
        time.sleep(0.05)


def _store_is_clean(home: Path) -> None:
    """The store was closed: its WAL checkpointed into the file and removed; the file is intact."""
    assert not (home / "sessions.sqlite3-wal").exists()
    db = sqlite3.connect(home / "sessions.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def _turns(home: Path, session_id: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(home / "sessions.sqlite3")
    rows = db.execute("SELECT role, content FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)).fetchall()
    db.close()
    return [(role, content) for role, content in rows]


def test_sigterm_refuses_new_connections_finishes_the_stream_stores_the_turn_and_exits_0(tmp_path: Path) -> None:
    with server(tmp_path, ALLINONE_SHUTDOWN_TIMEOUT="120") as (url, proc):
        body = {"text": ESSAY, "session_id": "s1", "max_tokens": 160, "temperature": 0, "stream": True}
        reader = Reader(url, body)
        reader.start()
        assert reader.first_token.wait(120), "no token arrived"
        proc.send_signal(signal.SIGTERM)
        _wait_refused(url)
        tokens_when_refused = reader.tokens()
        reader.join(timeout=180)
        assert not reader.is_alive() and reader.error is None
        assert proc.wait(timeout=60) == 0
    assert reader.events[-1] == "done"  # the stream in flight ended normally
    assert reader.tokens() > tokens_when_refused  # and was still generating after new connections were refused
    turns = _turns(tmp_path, "s1")
    assert [role for role, _ in turns] == ["user", "assistant"] and turns[0][1] == ESSAY
    assert len(turns[1][1]) > 0
    _store_is_clean(tmp_path)


def test_sigterm_cuts_a_stream_longer_than_the_shutdown_timeout_and_still_exits_0(tmp_path: Path) -> None:
    with server(tmp_path, ALLINONE_SHUTDOWN_TIMEOUT="1") as (url, proc):
        assert httpx.post(f"{url}/chat", json={"text": "你好", "session_id": "s0"}, timeout=120).status_code == 200
        body = {"text": ESSAY, "session_id": "s1", "max_tokens": 2000, "temperature": 0, "stream": True}
        reader = Reader(url, body)
        reader.start()
        assert reader.first_token.wait(120), "no token arrived"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=30)
    assert "done" not in reader.events  # cut at the bound
    assert [role for role, _ in _turns(tmp_path, "s0")] == ["user", "assistant"]  # earlier turns are kept
    assert _turns(tmp_path, "s1") == []  # the cut reply is lost, as with kill -9
    _store_is_clean(tmp_path)
