"""A streaming client that stops reading must not hold the model past the request's deadline: on a real uvicorn
on 127.0.0.1, a raw socket that never reads fills the buffers until writes block, and the deadline cuts them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from allinone.engines.base import Chunk, Conversation, GenParams, Usage
from allinone.server import create_app
from allinone.service import TaskService
from allinone.settings import Settings
from tests.fakes import FakeEngine
from tests.servers import serving


class FloodEngine(FakeEngine):
    """Streams 16 KB chunks until closed (a client that never reads soon blocks the server's writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        if "quick" in self.preview(conversation):
            yield Chunk("ok")
            yield Chunk("", "stop", Usage(1, 0, 1))
            return
        try:
            while True:
                time.sleep(0.001)
                yield Chunk("。" * 8192)
        finally:
            self.closed.set()


def test_a_client_that_never_reads_its_stream_frees_the_model_at_the_request_timeout(tmp_path: Path) -> None:
    engine = FloodEngine()
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", request_timeout=1)
    app = create_app(settings, TaskService(settings, engine))
    with serving(app) as port:
        body = json.dumps({"text": "flood", "stream": True}).encode()
        head = "POST /v1/tasks/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(head.encode() + body)  # and never read
            t0 = time.monotonic()
            assert engine.closed.wait(10), "the stream still held the model 10 s after it started"
            assert time.monotonic() - t0 < 4  # cut at the 1 s deadline, not left to run
            r = httpx.post(f"http://127.0.0.1:{port}/v1/tasks/chat", json={"text": "quick"}, timeout=10)
            assert r.status_code == 200  # the one reply slot is free again
        finally:
            sock.close()
    line = [json.loads(x) for x in (tmp_path / "requests.log").read_text().splitlines() if '"flood"' in x][-1]
    assert line["error"] == "timeout"
