"""One JSON line per request, and optionally one SQLite row, with phone numbers, e-mail addresses and ID-card
numbers masked and the input clipped; headers (API keys) are never recorded."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engines.base import Usage
from .errors import AllInOneError
from .settings import Settings

__all__ = ["RequestDb", "RequestLog", "RequestRecord", "mask"]

PROMPT_CHARS = 50  # characters of the rendered prompt in each line

_MASKS = [
    (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"), "<email>"),
    # mainland ID card: 17 digits and a check digit or X (18), or the old 15 digits
    (re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])"), "<id>"),
    # mobile numbers, with an optional +86 and spaces or dashes: 138 1234 5678
    (re.compile(r"(?<!\d)(?:\+?86[\s\-]?)?1[3-9]\d(?:[\s\-]?\d{4}){2}(?!\d)"), "<phone>"),
    (re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), "<phone>"),  # landline with area code: 010-12345678
    (re.compile(r"\+\d{1,3}(?:[\s\-]?\d){7,14}(?!\d)"), "<phone>"),  # other international numbers
]


def mask(text: str) -> str:
    """The text with personal identifiers replaced by <email>, <id> and <phone>."""
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text


def _clip(text: str | None, n: int) -> str | None:
    if text is None:
        return None
    text = mask(text)  # before clipping, so a number cut in half is still masked
    return text if len(text) <= n else text[:n] + "…"


@dataclass
class RequestRecord:
    """What one request did, filled in by the route and written when the response ends."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    task: str | None = None
    input: str | None = None
    prompt: str | None = None
    usage: Usage = field(default_factory=Usage)
    output: str | None = None
    status: int = 0
    error: str | None = None
    first_token_ms: float | None = None
    client_gone: bool = False  # the client disconnected before the response ended: logged as status 499

    def add_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.usage.prompt_tokens += usage.prompt_tokens
            self.usage.cached_tokens += usage.cached_tokens
            self.usage.completion_tokens += usage.completion_tokens

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def mark_first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = round(self.elapsed_ms(), 1)

    def as_log(self, input_chars: int) -> dict[str, Any]:
        return {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "task": self.task,
            "input": _clip(self.input, input_chars),
            "prompt": _clip(self.prompt, PROMPT_CHARS),
            "prompt_tokens": self.usage.prompt_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "latency_ms": round(self.elapsed_ms(), 1),
            "first_token_ms": self.first_token_ms,
            "output": _clip(self.output, input_chars),
            "status": self.status,
            "error": self.error,
        }


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise AllInOneError(f"unknown log level '{name}'; use DEBUG, INFO, WARNING or ERROR")
    return level


_ROW = [  # the columns of a row, as named in the JSON line; output and prompt are left out
    *("ts", "request_id", "method", "path", "task", "status", "latency_ms"),
    *("prompt_tokens", "cached_tokens", "completion_tokens", "first_token_ms", "input", "error"),
]
REQUEST_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, route TEXT NOT NULL, {", ".join(_ROW)});
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
"""


class RequestDb:
    """The request log as rows of one SQLite file (WAL): one per request, each its own transaction."""

    def __init__(self, path: Path, input_chars: int) -> None:
        self.path, self.input_chars = path, input_chars
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._db  # noqa: B018 - open now, so that a bad file is an error at startup
        except (sqlite3.Error, OSError) as e:
            raise AllInOneError(f"cannot open the request log {path}: {e}; move it aside to start anew") from None

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (again after `close`, when an app is started anew)."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(REQUEST_SCHEMA)
            self._conn = db
        return self._conn

    def write(self, record: RequestRecord, route: str) -> None:
        line = record.as_log(self.input_chars)  # masked and clipped; no output, no prompt
        values = [route, *(line[k] for k in _ROW)]
        try:
            with self._lock:
                self._db.execute(
                    f"INSERT INTO requests (route, {', '.join(_ROW)}) VALUES ({', '.join('?' * len(values))})", values
                )
        except (sqlite3.Error, OSError) as e:  # a full disk must not fail the request
            logging.getLogger("allinone.server").warning("request log row not written: %s", e)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class RequestLog:
    """The request log of one app: its own logger, writing JSON lines to the configured destination, and
    with `request_log` set, a row per request in HOME/requests.sqlite3."""

    def __init__(self, settings: Settings) -> None:
        self.input_chars = settings.log_input_chars
        self.db = RequestDb(settings.home / "requests.sqlite3", self.input_chars) if settings.request_log else None
        self.logger = logging.Logger("allinone.requests", _level(settings.log_level))  # not global: one per app
        if settings.log_file is not None:
            settings.log_file.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(settings.log_file, encoding="utf-8")
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)

    def write(self, record: RequestRecord, level: int = logging.INFO, route: str | None = None) -> None:
        """The JSON line (at `level`), and the database row of an API request (one with a `route`)."""
        if self.logger.isEnabledFor(level):
            self.logger.log(level, json.dumps(record.as_log(self.input_chars), ensure_ascii=False))
        if self.db is not None and route is not None:
            self.db.write(record, route)

    def close(self) -> None:
        for handler in self.logger.handlers:
            handler.close()
        if self.db is not None:
            self.db.close()
