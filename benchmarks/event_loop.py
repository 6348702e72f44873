"""Does any request body stall the server's event loop? /health latency on a real `allinone serve` (the default
model, request log on) while bodies just under ALLINONE_MAX_BODY_BYTES are posted one after the other: long runs
that the log's masks scan, digits, CJK, lone surrogates, a huge option value. Target: no /health over 50 ms.
Ordinary short texts are posted first as the baseline: what the model's own threads cost /health on this machine.

Run: .venv/bin/python benchmarks/event_loop.py   (prints a table, writes benchmarks/results/event_loop.json)
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from serving import wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
BODY_BYTES = 990_000  # each body; the default limit is 1,000,000
ROUNDS = 1  # posts of each kind (the model takes 10-100 s on each, for the input cut to its limit)
BASELINE_POSTS = 20  # ordinary short texts, one after the other
SERVER_THREADS: int | None = None  # ALLINONE_N_THREADS of the server; None = its default (the CPU count)
MAX_TOKENS = 4  # generated per accepted generate request: the model's time is not what is measured
POLL_S = 0.002  # pause between /health requests
IDLE_POLLS = 200  # /health requests before any body, for the baseline
TARGET_MS = 50.0
STARTUP_TIMEOUT_S = 300
POST_TIMEOUT_S = 300

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "event_loop.json"

USER = {"role": "user", "content": "x"}
BASELINE = ("ordinary texts (baseline)", "/v1/analyze_and_reply", {"text": "今天工作好累", "max_tokens": MAX_TOKENS})
KINDS: list[tuple[str, str, dict[str, Any], str]] = [  # name, path, body ("FILL" is filled), unit repeated
    ("letters + unknown field (400)", "/v1/tasks/chat", {"text": "FILL", "bogus": 1}, "a"),
    ("letters, chat", "/v1/tasks/chat", {"text": "FILL", "max_tokens": MAX_TOKENS}, "a"),
    ("e-mail local part", "/analyze", {"text": "FILL"}, "zhang.san+x"),
    ("a@b. repeated", "/analyze", {"text": "FILL"}, "a@b."),
    ("digits", "/v1/analyze_and_reply", {"text": "FILL", "max_tokens": MAX_TOKENS}, "1"),
    ("spaced phone digits", "/v1/analyze_and_reply", {"text": "FILL", "max_tokens": MAX_TOKENS}, "+86 138 "),
    ("CJK, translate auto", "/v1/tasks/translate", {"text": "FILL", "max_tokens": MAX_TOKENS}, "中"),
    ("option value digits (400)", "/v1/tasks/summary", {"text": "x", "length": "FILL"}, "9"),
    ("lone surrogates", "/v1/tasks/sentiment", {"text": "FILL"}, "\ud800"),
    ("RTL + NUL", "/v1/tasks/intent", {"text": "FILL"}, "\u202e\u0000"),
    ("model name (404)", "/v1/chat/completions", {"model": "FILL", "messages": [USER]}, "a"),
]


def fill(body: dict[str, Any], unit: str) -> bytes:
    base = json.dumps(body)
    repeats = (BODY_BYTES - len(base)) // (len(json.dumps(unit)) - 2)
    return base.replace('"FILL"', json.dumps(unit * repeats)).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Poller:
    """/health in a loop on its own connection; each latency filed under the kind being posted meanwhile."""

    def __init__(self, url: str) -> None:
        self.url, self.kind = url, "idle"
        self.samples: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=POST_TIMEOUT_S) as c:
            while not self.stop.is_set():
                kind, start = self.kind, time.perf_counter()
                c.get("/health").raise_for_status()
                self.samples.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
                time.sleep(POLL_S)


def stats(ms: list[float]) -> dict[str, float]:
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    over = sum(m > TARGET_MS for m in ms)
    return {"polls": len(ms), "p50_ms": statistics.median(ms), "p99_ms": p99, "max_ms": max(ms), "over_target": over}


def post_all(c: httpx.Client, path: str, body: bytes, times: int) -> dict[str, Any]:
    statuses, post_ms = [], []
    for _ in range(times):
        start = time.perf_counter()
        statuses.append(c.post(path, content=body, headers={"content-type": "application/json"}).status_code)
        post_ms.append((time.perf_counter() - start) * 1000)
    return {"path": path, "bytes": len(body), "statuses": statuses, "post_p50_ms": statistics.median(post_ms)}


def run(url: str) -> dict[str, Any]:
    poller = Poller(url)
    poller.thread.start()
    while len(poller.samples.get("idle", [])) < IDLE_POLLS:
        time.sleep(0.05)
    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=POST_TIMEOUT_S) as c:
        name, path, body = BASELINE
        poller.kind = name
        results[name] = post_all(c, path, json.dumps(body).encode(), BASELINE_POSTS)
        for name, path, template, unit in KINDS:
            poller.kind = name
            results[name] = post_all(c, path, fill(template, unit), ROUNDS)
    poller.stop.set()
    poller.thread.join(POST_TIMEOUT_S)
    for name, ms in poller.samples.items():
        results.setdefault(name, {}).update(stats(ms))
    return results


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALLINONE_HOME": tmp, "ALLINONE_MODEL": str(model_path()), "ALLINONE_REQUEST_LOG": "1"}
        if SERVER_THREADS is not None:
            env["ALLINONE_N_THREADS"] = str(SERVER_THREADS)
        cmd = [sys.executable, "-m", "allinone", "serve", "--port", str(port), "--log-file", f"{tmp}/requests.log"]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(server, port, STARTUP_TIMEOUT_S, poll_s=0.2)
            results = run(f"http://127.0.0.1:{port}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    worst = max(r["max_ms"] for name, r in results.items() if name not in ("idle", BASELINE[0]))
    out = {
        "config": {
            **{"body_bytes": BODY_BYTES, "rounds": ROUNDS, "max_tokens": MAX_TOKENS, "poll_s": POLL_S},
            **{"baseline_posts": BASELINE_POSTS, "server_threads": SERVER_THREADS},
        },
        "load_average_at_end": os.getloadavg(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "kinds": results,
        "worst_health_ms": worst,
        "within_target": worst <= TARGET_MS,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"/health latency while bodies of {BODY_BYTES:,} bytes are posted ({ROUNDS} of each kind), real model")
    head = f"{'body':<32}{'status':>8}{'post p50 ms':>13}{'polls':>7}{'/health p50':>13}{'p99':>8}{'max':>8}"
    print(head + f"{'>' + str(int(TARGET_MS)) + ' ms':>8}")
    for name, r in results.items():
        status = "/".join(sorted({str(s) for s in r.get("statuses", [])})) or "-"
        post = f"{r['post_p50_ms']:.0f}" if "post_p50_ms" in r else "-"
        row = f"{name:<32}{status:>8}{post:>13}{r['polls']:>7}{r['p50_ms']:>13.1f}"
        print(row + f"{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}{r['over_target']:>8}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    verdict = "OK" if worst <= TARGET_MS else "OVER"
    print(f"worst /health while posting: {worst:.1f} ms (target {TARGET_MS:.0f} ms) -> {verdict}")
    print(f"wrote {OUT.relative_to(ROOT)}")


def model_path() -> Path:
    """The default model as assembled in the user's cache (the benchmark's own home is a temp dir)."""
    from allinone.models import resolve_model
    from allinone.settings import Settings

    settings = Settings()
    return resolve_model(settings.model, settings).path


if __name__ == "__main__":
    main()
