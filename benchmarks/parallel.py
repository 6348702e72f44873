"""Choosing the default of ALLINONE_PARALLEL: the same load on `allinone serve` with 1, 2, 4 and 8 sequences.

For each setting a fresh server (2 threads) gets, after a warm-up:
  - USERS chat streams at once (concurrency.py's story prompt and seeds, up to its CHAT_MAX_TOKENS each; the same
    work for every setting): the aggregate tokens/s,
    each stream's time to first token, and the slowest stream's wall time (what the last user waits);
  - USERS sentiment requests at once (ChnSentiCorp dev texts): the slowest answer;
  - the server's RSS once loaded.
More sequences decode more streams per step (a step of 4 tokens costs little more than one on a CPU: the
weights are read once), but every step attends over more KV cells and takes longer, so each stream slows.

Run: .venv/bin/python benchmarks/parallel.py   (prints a table, writes benchmarks/results/parallel.json)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from concurrency import CHAT_MAX_TOKENS, classify, dev_texts, free_port, stream_chat
from serving import LIMITS, rss_mb, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
SETTINGS = (1, 2, 4, 8)
USERS = 8  # streams (then sentiment requests) at once
N_THREADS = 2
STARTUP_TIMEOUT_S = 300

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "parallel.json"


async def measure(url: str, texts: list[str]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600, limits=LIMITS) as client:
        await classify(client, url, texts[0], ours=True)  # warm: prefixes cached, first decodes done
        await stream_chat(client, url, "allinone-chat", seed=0)
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(stream_chat(client, url, "allinone-chat", seed=i) for i in range(USERS)))
        wall = max(r["end"] for r in runs) - t0
        ttft = [r["first"] - r["start"] for r in runs]
        answers = await asyncio.gather(*(classify(client, url, t, ours=True) for t in texts[1 : 1 + USERS]))
    return {
        "aggregate_tok_s": sum(r["tokens"] for r in runs) / wall,
        "tokens": [r["tokens"] for r in runs],
        "ttft_p50_s": statistics.median(ttft),
        "ttft_max_s": max(ttft),
        "slowest_stream_s": wall,
        "sentiment_slowest_s": max(answers),
    }


def run(parallel: int, texts: list[str]) -> dict[str, Any]:
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf = str(resolve_model("default", Settings()).path)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALLINONE_HOME": tmp, "ALLINONE_MODEL": gguf, "ALLINONE_N_THREADS": str(N_THREADS)}
        env |= {"ALLINONE_PARALLEL": str(parallel), "ALLINONE_SESSION_STORE": "memory", "ALLINONE_MAX_QUEUE": "64"}
        cmd = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(server, port, STARTUP_TIMEOUT_S, poll_s=0.5)
            rss = rss_mb(server.pid)
            out = asyncio.run(measure(f"http://127.0.0.1:{port}", texts))
        finally:
            server.terminate()
            server.wait(timeout=120)
    return {"parallel": parallel, "rss_mb_loaded": round(rss, 1), **out}


def main() -> None:
    texts = dev_texts(1 + USERS)
    rows = []
    for parallel in SETTINGS:
        rows.append(run(parallel, texts))
        r = rows[-1]
        print(
            f"parallel {parallel}: {r['aggregate_tok_s']:.1f} tok/s, first token p50 {r['ttft_p50_s']:.2f} s "
            f"max {r['ttft_max_s']:.2f} s, slowest stream {r['slowest_stream_s']:.1f} s, "
            f"slowest sentiment {r['sentiment_slowest_s']:.2f} s, RSS {r['rss_mb_loaded']:.0f} MB",
            flush=True,
        )
    knobs: dict[str, Any] = {"users": USERS, "chat_max_tokens": CHAT_MAX_TOKENS, "n_threads": N_THREADS}
    knobs |= {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"knobs": knobs, "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
