"""Request-log masking: personal identifiers never reach the log."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allinone.logs import MASK_MARGIN, RequestLog, RequestRecord, log_path, mask
from allinone.settings import Settings


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("电话13812345678请回电", "电话<phone>请回电"),
        ("call +86 138-1234-5678 now", "call <phone> now"),
        ("手机：138 1234 5678。", "手机：<phone>。"),
        ("座机 010-62345678", "座机 <phone>"),
        ("US office +1 415 555 0100", "US office <phone>"),
        ("邮箱zhang.san+hotel@mail.example.com.cn谢谢", "邮箱<email>谢谢"),
        ("身份证号11010519491231002X，", "身份证号<id>，"),
        ("old id 110105491231002 ok", "old id <id> ok"),
        ("订单号 20240101 共 3 晚 299 元", "订单号 20240101 共 3 晚 299 元"),  # short numbers stay
        ("房间 1208，楼层 12", "房间 1208，楼层 12"),
    ],
)
def test_mask_replaces_phones_emails_and_id_numbers(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_log_line_masks_before_clipping_so_a_cut_number_does_not_leak() -> None:
    record = RequestRecord("r1", "POST", "/analyze", input="x" * 8 + "13812345678")
    line = record.as_log(input_chars=12)
    assert "1381234" not in line["input"] and line["input"].startswith("xxxxxxxx<pho")


@pytest.mark.parametrize("run", ["a", "zhang.san+x", "a@b.", "1", "+86 138 "])
def test_masking_a_long_run_of_identifier_characters_takes_linear_time(run: str) -> None:
    text = run * (200_000 // len(run))  # the unbounded e-mail pattern took about 30 s on this
    start = time.perf_counter()
    mask(text)
    assert time.perf_counter() - start < 1.0


def test_a_log_line_masks_only_a_window_of_a_huge_input() -> None:
    record = RequestRecord("r1", "POST", "/analyze", input="a" * 1_000_000 + "13812345678")
    start = time.perf_counter()
    line = record.as_log(input_chars=80)
    assert time.perf_counter() - start < 0.05 and line["input"].endswith("…") and len(line["input"]) <= 81


def test_a_number_cut_by_the_end_of_the_masked_window_is_dropped_not_shown() -> None:
    emails = ("a" * 60 + "@example.com ") * 14  # each masked to 8 characters: the window's end becomes visible
    text = emails.ljust(200 + MASK_MARGIN - 5) + "13812345678 and more"
    line = RequestRecord("r1", "POST", "/analyze", input=text).as_log(input_chars=200)["input"]
    assert line.startswith("<email> <email>") and line.endswith("…")
    assert "13812" not in line and "1381" not in line


def test_a_logged_path_hides_session_ids_and_is_clipped() -> None:
    assert log_path("/v1/sessions/3f9a1c") == "/v1/sessions/<id>"
    assert log_path("/v1/sessions/3f9a1c/") == "/v1/sessions/<id>/"
    assert log_path("/v1/tasks/chat") == "/v1/tasks/chat"
    line = RequestRecord("r1", "GET", log_path("/nope/" + "x" * 100_000)).as_log(input_chars=80)
    assert len(line["path"]) <= 201 and line["path"].endswith("…")


def test_log_lines_are_written_by_the_logs_own_thread_not_the_callers(tmp_path: Path) -> None:
    log = RequestLog(Settings(home=tmp_path, log_file=tmp_path / "requests.log"))
    writers: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            writers.append(threading.current_thread().name)

    log.logger.addHandler(Spy())
    for i in range(3):
        log.write(RequestRecord(f"r{i}", "POST", "/analyze", input="电话13812345678"))
    log.close()
    assert writers == ["allinone-request-log"] * 3
    lines = (tmp_path / "requests.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and "<phone>" in lines[0] and "13812345678" not in lines[0]


def test_a_lone_surrogate_in_a_record_does_not_break_its_line(tmp_path: Path) -> None:
    log = RequestLog(Settings(home=tmp_path, log_file=tmp_path / "requests.log"))
    log.write(RequestRecord("r1", "POST", "/v1/tasks/\ud800", input="x\udfff"))
    log.close()
    line = (tmp_path / "requests.log").read_text(encoding="utf-8")
    assert '"/v1/tasks/?"' in line and '"x?"' in line


# --- the request log in SQLite ------------------------------------------------------------------


def _server_client(tmp_path: Path, **overrides: Any) -> TestClient:
    from allinone.server import create_app
    from allinone.service import TaskService
    from allinone.settings import Settings
    from tests.fakes import FakeEngine

    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", **overrides)
    return TestClient(
        create_app(settings, TaskService(settings, FakeEngine())),
        raise_server_exceptions=False,
        base_url="http://127.0.0.1",
    )


def test_the_request_log_keeps_one_masked_row_per_api_request_in_sqlite_wal(tmp_path: Path) -> None:
    secret = "sk-very-secret-key-123"
    text = "我的手机13812345678，" + "很长的秘密内容" * 50
    with _server_client(tmp_path, request_log=True, log_input_chars=20, api_keys=secret) as c:
        auth = {"Authorization": f"Bearer {secret}"}
        assert c.post("/v1/tasks/chat", json={"text": text}, headers=auth).status_code == 200
        assert c.post("/analyze", json={"text": " "}, headers=auth).status_code == 400
        assert c.post("/analyze", json={"text": "hi"}).status_code == 401
        assert c.get("/health").status_code == 200  # not an API request: no row
    db = sqlite3.connect(tmp_path / "requests.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
    db.close()
    assert [(r["route"], r["task"], r["status"]) for r in rows] == [
        ("/v1/tasks/{name}", "chat", 200),
        ("/analyze", "sentiment", 400),
        ("unmatched", None, 401),
    ]
    first = rows[0]
    assert first["latency_ms"] > 0 and first["ts"] and first["completion_tokens"] == 2 and first["prompt_tokens"] > 0
    assert first["input"] == "我的手机<phone>，很长的秘密内容很…"  # masked, then clipped to 20 characters
    assert rows[1]["error"] == "invalid_input" and rows[2]["error"] == "unauthorized"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("requests.sqlite3*"))
    assert secret.encode() not in stored and "很长的秘密内容很长的秘密内容很长的秘密内容".encode() not in stored
    assert b"13812345678" not in stored


def test_the_request_log_is_off_by_default(tmp_path: Path) -> None:
    with _server_client(tmp_path) as c:
        c.post("/analyze", json={"text": "hi"})
    assert not (tmp_path / "requests.sqlite3").exists()
