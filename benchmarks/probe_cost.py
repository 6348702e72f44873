"""What the learned head's probe costs: three `allinone serve` on the same model, round after round.

With a head (the default), llama.cpp asks the engine's eval callback about every node of every decode's graph
(~430 on the default model), also in steps that read no hidden state: the callback is fixed when the context is
created. Servers:
- `gate`: heads on, the callback behind the C gate (engines/probe.py), which answers every question in C and calls
  Python only with the tensors a head reads;
- `python`: heads on, the Python callback for every node (the gate cannot be built: CC names no compiler and the
  server's ALLINONE_HOME has no built gate);
- `off`: heads off, no callback.
Each round runs one full chat stream, then four at once, then N_SENTIMENT sentiment requests one after another (the
steps where a head reads hidden states), on each server in turn, the order alternating, and reads the aggregate
tokens/s and, from each server's /metrics, its time inside llama_decode per step and per sentiment text. Only ratios
are stable on a shared machine: each server against `off` in the same round.
Run: .venv/bin/python benchmarks/probe_cost.py   (prints a table, writes benchmarks/results/probe_cost.json)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx

from concurrency import (
    CHAT_MAX_TOKENS,
    N_THREADS,
    OURS_CMD,
    STREAMS,
    classify,
    dev_texts,
    free_port,
    full_streams,
    ours_env,
    start,
    stop,
)
from serving import LIMITS, metric, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
ROUNDS = 6  # rounds (one stream, then four, on each server), the order alternating
STARTUP_TIMEOUT_S = 300
MODEL = "allinone-chat"
N_SENTIMENT = 20  # ChnSentiCorp dev texts per round and server
WIDTHS = {"one": 1, "four": STREAMS}  # streams at once
SERVERS = {"gate": {}, "python": {"CC": "/nonexistent/cc"}, "off": {"ALLINONE_USE_HEADS": "0"}}  # env of each

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "probe_cost.json"


async def decode_ms(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    text = (await client.get(f"{url}/metrics")).text
    return metric(text, "allinone_engine_steps_total"), metric(text, "allinone_engine_busy_seconds_total")


async def measure(urls: dict[str, str], texts: list[str]) -> dict[str, dict[str, list[float]]]:
    keys = [f"{n}_{what}" for n in WIDTHS for what in ("tok_s", "decode_ms_per_step")] + ["sentiment_ms_per_text"]
    out: dict[str, dict[str, list[float]]] = {name: {key: [] for key in keys} for name in urls}
    async with httpx.AsyncClient(timeout=600, limits=LIMITS) as client:
        for url in urls.values():  # warm: prefixes cached, first decodes done
            await classify(client, url, "房间很干净", True)
            await full_streams(client, url, MODEL, 1, seed=0)
        for r in range(ROUNDS):
            for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                for n, streams in WIDTHS.items():
                    steps, busy = await decode_ms(client, urls[name])
                    m = await full_streams(client, urls[name], MODEL, streams, seed=100 * r)
                    steps2, busy2 = await decode_ms(client, urls[name])
                    out[name][f"{n}_tok_s"].append(m["aggregate_tok_s"])
                    out[name][f"{n}_decode_ms_per_step"].append(1000 * (busy2 - busy) / (steps2 - steps))
                    print(f"round {r} {name:<6} {n}: {m['aggregate_tok_s']:.1f} tok/s, decode "
                          f"{out[name][f'{n}_decode_ms_per_step'][-1]:.1f} ms/step", flush=True)  # fmt: skip
                _, busy = await decode_ms(client, urls[name])
                for text in texts:
                    await classify(client, urls[name], text, True)
                _, busy2 = await decode_ms(client, urls[name])
                out[name]["sentiment_ms_per_text"].append(1000 * (busy2 - busy) / len(texts))
                print(
                    f"round {r} {name:<6} sentiment: {out[name]['sentiment_ms_per_text'][-1]:.1f} ms a text", flush=True
                )
    return out


def main() -> None:
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf, texts = resolve_model("default", Settings()).path, dev_texts(N_SENTIMENT)
    ports = {name: free_port() for name in SERVERS}
    with tempfile.TemporaryDirectory() as tmp:
        home, procs = Path(tmp), {}
        for name, port in ports.items():
            env = ours_env(home / name, gguf) | {"ALLINONE_LOG_FILE": str(home / f"{name}.log")} | SERVERS[name]
            procs[name] = start([*OURS_CMD, "--port", str(port)], env, home / f"{name}.out")
        try:
            for name, port in ports.items():
                wait_healthy(procs[name], port, STARTUP_TIMEOUT_S, 0.5)
            runs = asyncio.run(measure({name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, texts))
        finally:
            stop(list(procs.values()))
    off = runs["off"]

    def per_off(name: str, key: str) -> float:  # the median of each round's ratio to heads off
        return statistics.median(a / b for a, b in zip(runs[name][key], off[key], strict=True))

    result: dict[str, Any] = {
        "knobs": {"rounds": ROUNDS, "streams": STREAMS, "max_tokens": CHAT_MAX_TOKENS, "n_threads": N_THREADS}
        | {"n_sentiment": N_SENTIMENT},
        "rounds": runs,
        "median": {name: {key: statistics.median(v) for key, v in run.items()} for name, run in runs.items()},
        "per_off": {name: {key: per_off(name, key) for key in off} for name in ("gate", "python")},
    }
    print(f"| medians of {ROUNDS} rounds (ratio to heads off) | gate | python | off |")
    print("|---|---:|---:|---:|")
    for key in off:
        cells = [f"{result['median'][n][key]:.1f}" + (f" ({result['per_off'][n][key]:.3f})" if n != "off" else "")
                 for n in SERVERS]  # fmt: skip
        print(f"| {key} | " + " | ".join(cells) + " |")
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
