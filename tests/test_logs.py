"""Request-log masking: personal identifiers never reach the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allinone.logs import RequestRecord, mask


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


# --- the request log in SQLite ------------------------------------------------------------------


def _server_client(tmp_path: Path, **overrides: Any) -> TestClient:
    from allinone.router import Router
    from allinone.server import create_app
    from allinone.settings import Settings
    from tests.fakes import FakeEngine

    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", **overrides)
    return TestClient(create_app(settings, Router(settings, FakeEngine())), raise_server_exceptions=False)


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
