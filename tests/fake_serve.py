"""The app on the fake engine behind a real uvicorn on 127.0.0.1, in a process of its own: for tests about
sockets, headers and the event loop that need no model. `python -m tests.fake_serve PORT HOME [NAME=VALUE ...]`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
START_SECONDS = 60.0  # the import of fastapi and friends on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def fake_server(home: Path, **settings: str) -> Iterator[str]:
    """The base URL of a fake-engine server with these settings (ALLINONE_* names, lower case); always killed."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    pairs = [f"{k}={v}" for k, v in settings.items()]
    cmd = [sys.executable, "-m", "tests.fake_serve", str(port), str(home), *pairs]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert proc.poll() is None, "the fake server exited while starting"
            assert time.monotonic() < deadline, "the fake server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()  # a clean shutdown: the request log is written out
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def main() -> None:
    import uvicorn

    from allinone.server import create_app
    from allinone.service import TaskService
    from allinone.settings import Settings
    from tests.fakes import FakeEngine

    port, home, *pairs = sys.argv[1:]
    overrides = dict(pair.split("=", 1) for pair in pairs)
    settings = Settings(home=Path(home), log_file=Path(home) / "requests.log", **overrides)  # type: ignore[arg-type]
    app = create_app(settings, TaskService(settings, FakeEngine()))
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
