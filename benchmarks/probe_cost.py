"""What the learned head's probe costs chat streams: two `allinone serve`, heads on and heads off, same model.

With a head (the default), llama.cpp calls the engine's eval callback, a Python function, for every node of every
decode's graph (~430 on the default model), also in steps that read no hidden state: the callback is fixed when the
context is created. This runs four full chat streams on one server, then the other, round after round in
alternating order, and compares the aggregate tokens/s (only ratios are stable on a shared machine).
Run: .venv/bin/python benchmarks/probe_cost.py   (prints a table, writes benchmarks/results/probe_cost.json)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from concurrency import CHAT_MAX_TOKENS, N_CTX, N_THREADS, STREAMS, classify, free_port, full_streams, start
from serving import wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
ROUNDS = 6  # four-stream rounds per server, the order alternating
STARTUP_TIMEOUT_S = 300
MODEL = "allinone-chat"

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "probe_cost.json"


async def measure(urls: dict[str, str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in urls}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        for url in urls.values():  # warm: prefixes cached, first decodes done
            await classify(client, url, "房间很干净", True)
            await full_streams(client, url, MODEL, 1, seed=0)
        for r in range(ROUNDS):
            for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                m = await full_streams(client, urls[name], MODEL, STREAMS, seed=100 * r)
                out[name].append(m["aggregate_tok_s"])
                print(f"round {r} {name:<9} {m['aggregate_tok_s']:.1f} tok/s", flush=True)
    return out


def main() -> None:
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf = resolve_model("default", Settings()).path
    ports = {"heads on": free_port(), "heads off": free_port()}
    with tempfile.TemporaryDirectory() as tmp:
        home, procs = Path(tmp), {}
        for name, port in ports.items():
            env = {"ALLINONE_HOME": str(home / name), "ALLINONE_MODEL": str(gguf), "ALLINONE_N_THREADS": str(N_THREADS)}
            env |= {"ALLINONE_SESSION_STORE": "memory", "ALLINONE_N_CTX": str(N_CTX)}
            env["ALLINONE_LOG_FILE"] = str(home / f"{name}.log")
            env["ALLINONE_USE_HEADS"] = "1" if name == "heads on" else "0"
            cmd = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1", "--port", str(port)]
            procs[name] = start(cmd, env, home / f"{name}.out")
        try:
            for name, port in ports.items():
                wait_healthy(procs[name], port, STARTUP_TIMEOUT_S, 0.5)
            runs = asyncio.run(measure({name: f"http://127.0.0.1:{port}" for name, port in ports.items()}))
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(30)
    med = {name: statistics.median(v) for name, v in runs.items()}
    result: dict[str, Any] = {
        "knobs": {"rounds": ROUNDS, "streams": STREAMS, "max_tokens": CHAT_MAX_TOKENS, "n_threads": N_THREADS},
        "aggregate_tok_s": runs,
        "median_tok_s": med,
        "ratio_on_off": med["heads on"] / med["heads off"],
        "rounds_on_slower": sum(a < b for a, b in zip(runs["heads on"], runs["heads off"], strict=True)),
    }
    print(f"| four streams, aggregate (median of {ROUNDS}) | heads on | heads off | on / off |")
    print("|---|---:|---:|---:|")
    print(f"| tokens/s | {med['heads on']:.1f} | {med['heads off']:.1f} | {result['ratio_on_off']:.3f} |")
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
