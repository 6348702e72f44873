"""Durable sessions on a real `allinone serve` process: a restart keeps the conversation, and kill -9
in the middle of a streamed reply loses only that reply and never corrupts the store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from allinone.settings import Settings
from allinone.widen import widened

pytestmark = pytest.mark.model

START_TIMEOUT = 120.0  # seconds for the model to load on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _model_path() -> str:
    """The cached default model's widened copy, made once in the user's cache (each server's own home would make
    one more)."""
    settings = Settings()
    found = sorted(settings.models_dir.glob("*.gguf"))
    if not found:
        pytest.skip("the default model is not cached")
    return str(widened(found[0], settings.home / "widened"))


@contextmanager
def server(home: Path, **extra_env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`allinone serve` on a free loopback port with its own ALLINONE_HOME; always killed at the end."""
    port = _free_port()
    env = {
        **os.environ,
        "ALLINONE_HOME": str(home),
        "ALLINONE_MODEL": _model_path(),
        "ALLINONE_N_THREADS": "1",
        "ALLINONE_N_CTX": "2048",
        "ALLINONE_LOG_FILE": str(home / "requests.log"),
        **extra_env,
    }
    cmd = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, "the server exited while starting"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in time"
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _say(url: str, session_id: str, text: str) -> str:
    body = {"text": text, "session_id": session_id, "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{url}/v1/tasks/chat", json=body, timeout=120)
    assert r.status_code == 200, r.text
    reply: str = r.json()["text"]
    return reply


def _turns(url: str, session_id: str) -> list[dict[str, str]]:
    r = httpx.get(f"{url}/v1/sessions/{session_id}", timeout=10)
    assert r.status_code == 200, r.text
    return [{"role": t["role"], "content": t["content"]} for t in r.json()["turns"]]


def test_a_session_continues_after_restart_and_kill_9_loses_only_the_reply_in_flight(tmp_path: Path) -> None:
    with server(tmp_path) as (url, _):
        first = _say(url, "s1", "你好")
        second = _say(url, "s1", "我叫小明")
        before = _turns(url, "s1")
    assert [t["content"] for t in before] == ["你好", first, "我叫小明", second]

    with server(tmp_path) as (url, proc):
        assert _turns(url, "s1") == before  # the restart kept the whole conversation
        third = _say(url, "s1", "谢谢")
        assert _turns(url, "s1") == [
            *before,
            {"role": "user", "content": "谢谢"},
            {"role": "assistant", "content": third},
        ]
        body = {"text": "写一篇很长的故事", "session_id": "s1", "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/tasks/chat", json=body, timeout=60) as r:
            tokens = 0
            for line in r.iter_lines():
                tokens += line.startswith("event: token")
                if tokens >= 3:  # mid-reply
                    proc.send_signal(signal.SIGKILL)
                    break
        assert tokens >= 3
        proc.wait(timeout=30)

    db = sqlite3.connect(tmp_path / "sessions.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    with server(tmp_path) as (url, _):
        after = _turns(url, "s1")
    assert after == [*before, {"role": "user", "content": "谢谢"}, {"role": "assistant", "content": third}]
