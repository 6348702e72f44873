"""Is the first request after `allinone serve` starts as fast as later ones?

`serve` computes every task's cached prefix before /health says ready. This starts a real `serve`, waits for
/health, then times the first /analyze, chat turn and keywords request and the median of the next ones. Every
request's text starts with another name: the service reuses the cached state of an earlier request as far as its
prompt matches, so a repeated text would make the later requests look faster than a new user's.
Run: .venv/bin/python benchmarks/warm_start.py   (writes benchmarks/results/warm_start.json)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from allinone.engines import llamacpp_file
from allinone.settings import Settings
from serving import wait_healthy, weights

# --- knobs ---------------------------------------------------------------------------------------
LATER = 10  # requests after the first, per kind (NAMES has one for each)
N_THREADS = 2
NAMES = ["小明", "小红", "老王", "阿强", "小李", "张伟", "王芳", "刘洋", "陈静", "杨帆", "赵磊"]  # one per request
REQUESTS = {  # kind: (path, body); each request's text is a name from NAMES, a comma, then this text
    "sentiment": ("/analyze", {"text": "这家酒店服务太差了，房间又脏又吵，再也不来了。"}),
    "chat (8 tokens)": ("/v1/tasks/chat", {"text": "今天天气真好，我们去公园吧。", "max_tokens": 8, "seed": 1}),
    "keywords": ("/v1/tasks/keywords", {"text": "华为发布了新款折叠屏手机，搭载麒麟芯片，支持卫星通话。", "seed": 1}),
}

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "warm_start.json"


def main() -> None:
    assert len(NAMES) > LATER, "a name for every request"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ALLINONE_HOME": home, "ALLINONE_N_THREADS": str(N_THREADS)}
        gguf = Path.home() / ".cache/allinone/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        env |= {"ALLINONE_MODEL": str(gguf)}
        loaded = llamacpp_file(gguf, Settings(home=Path(home)))  # the widened copy, made before the clock starts
        env |= {"ALLINONE_LOG_FILE": str(Path(home) / "requests.log"), "ALLINONE_SESSION_STORE": "memory"}
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "allinone", "serve", "--port", str(port)]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(server, port, 300, 0.05)
            ready_s = time.perf_counter() - t0
            rows = {}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
                for kind, (path, body) in REQUESTS.items():
                    times = []
                    for name in NAMES[: 1 + LATER]:
                        t = time.perf_counter()
                        assert c.post(path, json=body | {"text": f"{name}，{body['text']}"}).status_code == 200
                        times.append(time.perf_counter() - t)
                    rows[kind] = {"first_s": times[0], "later_p50_s": statistics.median(times[1:])}
        finally:
            server.terminate()
            server.wait(60)
    print(f"serve: process start to ready (model loaded, tasks warm) {ready_s:.2f} s")
    print("| request | first after ready | later, p50 |")
    print("|---|---:|---:|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['first_s']:.3f} s | {r['later_p50_s']:.3f} s |")
    OUT.write_text(
        json.dumps(
            {
                "ready_s": ready_s,
                "later": LATER,
                "n_threads": N_THREADS,
                "weights": weights(loaded, gguf),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
