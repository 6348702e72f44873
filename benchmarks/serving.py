"""Shared by the benchmarks that start a real `allinone serve`: wait until it answers /health, read its RSS and
its /metrics counters; the HTTP client limits they use."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

# Every request on a connection of its own: llama-server may close a connection after a streamed reply without
# saying so (no "Connection: close"), and a request sent on it at once fails with "Server disconnected without sending
# a response" (1 in 10 requests right after a stream, on its own; it broke three concurrency.py runs). Connecting on
# loopback costs both servers alike, well under a millisecond.
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=0)


def weights(loaded: Path | str, source: Path) -> str:
    """How the model file llama.cpp loaded stores the weights of `source`: "widened" when it loaded the widened copy
    (engines.llamacpp_file), "as in the file" when it loaded `source` itself (widening off, or not possible)."""
    return "as in the file" if Path(loaded) == source else "widened"


def engine_weights(engine: Any, settings: Any) -> str:
    """`weights` for a loaded llama.cpp engine: the file it read, against the model `settings` names."""
    from allinone.models import resolve_model

    return weights(engine.info.details["path"], resolve_model(settings.model, settings).path)


def wait_healthy(server: subprocess.Popen[bytes], port: int, timeout_s: float, poll_s: float) -> None:
    """Return once the server on 127.0.0.1:`port` answers /health with 200; exit if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    server.kill()
    raise SystemExit("server did not become ready")


def rss_mb(pid: int) -> float:
    """The resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def metric(text: str, name: str) -> float:
    """A counter's value in the server's /metrics text (Prometheus exposition format)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    if found is None:
        raise SystemExit(f"the server's /metrics has no {name}")
    return float(found.group(1))
