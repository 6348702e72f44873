"""One JSON line per request, and optionally one SQLite row, with phone numbers, e-mail addresses and ID-card
numbers masked and the input clipped; headers (API keys) are never recorded. Lines are written by a thread of
their own, never on the event loop."""

from __future__ import annotations

import json
import logging
import queue
import re
import sqlite3
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engines.base import Usage
from .errors import AllInOneError
from .files import private_file
from .settings import Settings

__all__ = ["RequestDb", "RequestLog", "RequestRecord", "log_path", "mask"]

PROMPT_CHARS = 50  # characters of the rendered prompt in each line
PATH_CHARS = 200  # characters of the request path in each line
LONGEST_MATCH = 640  # characters: the longest text the masks match (an e-mail of 64 + 1 + 9 labels of 63 + dots)
MASK_MARGIN = 1000  # characters masked past the clip point: more than LONGEST_MATCH
QUEUE_LINES = 10_000  # lines waiting for the writer thread; beyond that they are dropped (and counted)
CLOSE_SECONDS = 10.0  # at shutdown, the longest wait for the writer to finish the queued lines

_MASKS = [
    # bounded runs: an unbounded local part made the search quadratic on long runs of letters
    (re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){1,8}"), "<email>"),
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


_IDENTIFIER = frozenset(string.ascii_letters + string.digits + "._%+-@")  # what a masked identifier is made of
_SESSION_PATH = re.compile(r"^/v1/sessions/[^/]+")


def keep(text: str, n: int) -> str:
    """As much of `text` as a log line clipped to `n` characters can need: cheap, so it can run anywhere."""
    return text[: n + MASK_MARGIN + 1]


def _drop_partial(text: str) -> str:
    """`text` without the end of the identifier-like run it ends in, as much of it as a match could span (a phone
    number's digits may be spaced)."""
    i, stop = len(text), max(0, len(text) - LONGEST_MATCH)
    while i > stop and (text[i - 1] in _IDENTIFIER or (text[i - 1] in " -" and i > 1 and text[i - 2].isdigit())):
        i -= 1
    return text[:i]


def _clip(text: str | None, n: int) -> str | None:
    """The first `n` characters of the masked text. Only a window of it is masked (masking is linear, but a
    whole megabyte of it is not cheap); a number the window's end cuts in half is dropped, never shown."""
    if text is None:
        return None
    window = text[: n + MASK_MARGIN]
    masked = mask(window)
    if len(window) < len(text):
        return _scrub(_drop_partial(masked)[:n]) + "…"
    return _scrub(masked if len(masked) <= n else masked[:n] + "…")


def _scrub(text: str) -> str:
    """Lone surrogates, which cannot be written as UTF-8, as '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def log_path(path: str) -> str:
    """The request path as logged: a session id replaced by <id> (ids are secrets), and cut to a bounded size."""
    return _SESSION_PATH.sub("/v1/sessions/<id>", path[: PATH_CHARS + MASK_MARGIN + 1], count=1)


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
    ended: float | None = None  # when the response ended, on the `time.perf_counter` clock
    ts: datetime | None = None  # the same moment as wall-clock time

    def add_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.usage.prompt_tokens += usage.prompt_tokens
            self.usage.cached_tokens += usage.cached_tokens
            self.usage.completion_tokens += usage.completion_tokens

    def elapsed_ms(self) -> float:
        return ((self.ended or time.perf_counter()) - self.started) * 1000

    def end(self) -> None:
        """Stop the clock: the line is written later, by the log's thread."""
        self.ended, self.ts = time.perf_counter(), datetime.now(UTC)

    def mark_first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = round(self.elapsed_ms(), 1)

    def as_log(self, input_chars: int) -> dict[str, Any]:
        return {
            "ts": (self.ts or datetime.now(UTC)).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "method": self.method,
            "path": _clip(self.path, PATH_CHARS),
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
            private_file(self.path, tighten=True)
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


_Line = tuple[RequestRecord, int, str | None]  # a record, its level, its route (None: no database row)


class RequestLog:
    """The request log of one app: its own logger, writing JSON lines to the configured destination, and
    with `request_log` set, a row per request in HOME/requests.sqlite3. `write` only queues the record:
    masking, formatting and writing happen in a thread of the log's own."""

    def __init__(self, settings: Settings) -> None:
        self.input_chars = settings.log_input_chars
        self.db = RequestDb(settings.home / "requests.sqlite3", self.input_chars) if settings.request_log else None
        self.logger = logging.Logger("allinone.requests", _level(settings.log_level))  # not global: one per app
        if settings.log_file is not None:
            private_file(settings.log_file)
            handler: logging.Handler = logging.FileHandler(settings.log_file, encoding="utf-8")
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)
        self._queue: queue.Queue[_Line | None] = queue.Queue(QUEUE_LINES)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.dropped = 0  # lines lost because the writer fell behind by QUEUE_LINES

    def keep(self, text: str) -> str:
        """What a record needs to hold of an input or output for its line."""
        return keep(text, self.input_chars)

    def write(self, record: RequestRecord, level: int = logging.INFO, route: str | None = None) -> None:
        """Queue the JSON line (at `level`) and the database row of an API request (one with a `route`)."""
        record.end()
        if not self.logger.isEnabledFor(level) and (self.db is None or route is None):
            return
        self._start()
        try:
            self._queue.put_nowait((record, level, route))
        except queue.Full:
            self.dropped += 1

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="allinone-request-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._write(*line)
            except Exception:  # a bad record must not stop the log
                logging.getLogger("allinone.server").exception("request log line not written")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, record: RequestRecord, level: int, route: str | None) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.logger.warning(json.dumps({"warning": "request log lines dropped", "lines": dropped}))
        if self.logger.isEnabledFor(level):
            self.logger.log(level, json.dumps(record.as_log(self.input_chars), ensure_ascii=False))
        if self.db is not None and route is not None:
            self.db.write(record, route)

    def flush(self) -> None:
        """Wait until every queued line is written."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Write the queued lines, stop the thread and close the files (they reopen on the next write)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(CLOSE_SECONDS)
        for handler in self.logger.handlers:
            handler.close()
        if self.db is not None:
            self.db.close()
