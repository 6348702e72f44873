"""What the HTTP service adds to a sentiment call: POST /analyze to `allinone serve` vs a direct in-process call.

The server runs as its own process (the real `allinone serve`, request log on); the client keeps one
connection open. Direct and HTTP calls alternate text by text, on the same texts, so that any drift in
the machine's load hits both alike. Budget: the service may add at most 10% or 15 ms to the p50,
whichever is larger.

Run: .venv/bin/python benchmarks/http_overhead.py   (prints a table, writes benchmarks/results/http_overhead.json)
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
import time
from pathlib import Path

import httpx

from serving import engine_weights, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 200  # ChnSentiCorp dev texts, in file order
WARMUP = 5  # untimed calls per path first (task prefix cached, connection open)
ENDPOINT = "/analyze"  # the original service's route
BUDGET_REL, BUDGET_MS = 0.10, 15.0  # allowed p50 overhead: max(10%, 15 ms)
STARTUP_TIMEOUT_S = 300

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "http_overhead.json"


def texts(n: int) -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int, log_file: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "allinone", "serve", "--port", str(port), "--log-file", str(log_file)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(server, port, STARTUP_TIMEOUT_S, poll_s=0.2)
    return server


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=10)
    return {"p50_ms": statistics.median(ms), "p90_ms": q[-1], "mean_ms": statistics.fmean(ms)}


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    sample = texts(N_TEXTS)
    settings = Settings()
    service = TaskService(settings)
    service.engine  # noqa: B018 - load before timing
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(port, Path(tmp) / "requests.log")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for text in sample[:WARMUP]:
                    service.classify("sentiment", text)
                    client.post(ENDPOINT, json={"text": text}).raise_for_status()
                direct, http, agree = [], [], 0
                for text in sample:
                    t0 = time.perf_counter()
                    label = service.classify("sentiment", text).label
                    t1 = time.perf_counter()
                    r = client.post(ENDPOINT, json={"text": text})
                    t2 = time.perf_counter()
                    r.raise_for_status()
                    direct.append((t1 - t0) * 1000)
                    http.append((t2 - t1) * 1000)
                    agree += r.json()["label"] == label
                logged = sum(1 for _ in (Path(tmp) / "requests.log").open(encoding="utf-8"))
        finally:
            server.terminate()
            server.wait(timeout=30)

    d, h = summary(direct), summary(http)
    added = h["p50_ms"] - d["p50_ms"]
    paired = statistics.median(b - a for a, b in zip(direct, http, strict=True))
    budget = max(BUDGET_REL * d["p50_ms"], BUDGET_MS)
    result = {
        "config": {"n_texts": N_TEXTS, "warmup": WARMUP, "endpoint": ENDPOINT, "keep_alive": True},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "direct": d,
        "http": h,
        "overhead": {
            "p50_added_ms": added,
            "p50_added_pct": 100 * added / d["p50_ms"],
            "median_paired_ms": paired,
            "budget_ms": budget,
            "within_budget": added <= budget,
        },
        "labels_agree": agree / len(sample),
        "weights": engine_weights(service.engine, settings),
        "request_log_lines": logged,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    print(f"sentiment, {N_TEXTS} ChnSentiCorp dev texts, {ENDPOINT} over keep-alive HTTP vs in-process")
    print(f"{'':<10}{'p50 ms':>10}{'p90 ms':>10}{'mean ms':>10}")
    for name, s in (("direct", d), ("http", h)):
        print(f"{name:<10}{s['p50_ms']:>10.1f}{s['p90_ms']:>10.1f}{s['mean_ms']:>10.1f}")
    o = result["overhead"]
    assert isinstance(o, dict)
    print(
        f"p50 added: {added:.1f} ms ({o['p50_added_pct']:.1f}%), median paired: {paired:.1f} ms, "
        f"budget {budget:.1f} ms -> {'OK' if o['within_budget'] else 'OVER BUDGET'}; labels agree {agree}/{len(sample)}"
    )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
