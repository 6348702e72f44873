"""Where `allinone serve`'s CPU goes while four chat streams run: the model's threads against the rest.

One server (the defaults, as concurrency.py starts it); four streams that run to CHAT_MAX_TOKENS, ROUNDS times. Around
each round the CPU time of every thread of the server is read from /proc/PID/task/*/stat. The two threads with the
most CPU are llama.cpp's compute threads (the scheduler thread, whose Python step work between decodes is counted
with it, and the worker it computes with); everything else (the event loop: HTTP, server-sent events; the worker
threads that step the streams) is the serving overhead. `/metrics` gives the seconds the scheduler spent inside
`llama_decode`, so the step work outside it is wall time minus that.
CPU times are counts of the kernel's ticks (1/100 s), so they hold on a shared machine where wall times do not.
Run: .venv/bin/python benchmarks/thread_cpu.py   (prints a table, writes benchmarks/results/thread_cpu.json)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from concurrency import CHAT_MAX_TOKENS, N_THREADS, STREAMS, classify, free_port, full_streams, ours_env, start
from serving import LIMITS, metric, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
ROUNDS = 3
N_COMPUTE = N_THREADS  # llama.cpp's threads: the scheduler thread and N_THREADS - 1 workers
STARTUP_TIMEOUT_S = 300
MODEL = "allinone-chat"

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "thread_cpu.json"
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


async def busy_seconds(client: httpx.AsyncClient, url: str) -> tuple[int, float]:
    """The engine's decodes so far and the seconds spent in them, from /metrics."""
    text = (await client.get(f"{url}/metrics")).text
    return int(metric(text, "allinone_engine_steps_total")), metric(text, "allinone_engine_busy_seconds_total")


async def measure(url: str, pid: int) -> list[dict[str, Any]]:
    rounds = []
    async with httpx.AsyncClient(timeout=600, limits=LIMITS) as client:
        await classify(client, url, "房间很干净", True)  # warm: prefixes cached, first decodes done
        await full_streams(client, url, MODEL, 1, seed=0)
        for r in range(ROUNDS):
            cpu0, (steps0, busy0), t0 = thread_cpu(pid), await busy_seconds(client, url), time.perf_counter()
            m = await full_streams(client, url, MODEL, STREAMS, seed=100 * r)
            wall = time.perf_counter() - t0
            cpu1, (steps1, busy1) = thread_cpu(pid), await busy_seconds(client, url)
            spent = sorted((cpu1[t] - cpu0.get(t, 0.0) for t in cpu1), reverse=True)
            total = sum(spent)
            rounds.append(
                {
                    "wall_s": wall,
                    "tries": m["tries"],  # a try in which a stream ended early is run again (all are counted)
                    "cpu_s": total,
                    "compute_threads_share": sum(spent[:N_COMPUTE]) / total,
                    "other_threads_share": sum(spent[N_COMPUTE:]) / total,
                    "busiest_other_thread_share": spent[N_COMPUTE] / total if len(spent) > N_COMPUTE else 0.0,
                    "steps": steps1 - steps0,
                    "in_decode_share": (busy1 - busy0) / wall,
                    "outside_decode_ms_per_step": 1000 * (wall - (busy1 - busy0)) / max(steps1 - steps0, 1),
                }
            )
            row = rounds[-1]
            print(f"round {r}: {row['cpu_s']:.1f} s CPU; compute threads {100 * row['compute_threads_share']:.1f}%, "
                  f"others {100 * row['other_threads_share']:.1f}%; in llama_decode "
                  f"{100 * row['in_decode_share']:.1f}% of wall", flush=True)  # fmt: skip
    return rounds


def main() -> None:
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf = resolve_model("default", Settings()).path
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = ours_env(home, gguf) | {"ALLINONE_LOG_FILE": str(home / "log")}
        cmd = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = start(cmd, env, home / "server.out")
        try:
            wait_healthy(proc, port, STARTUP_TIMEOUT_S, 0.5)
            rounds = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)

    def mean(key: str) -> float:
        return sum(r[key] for r in rounds) / len(rounds)

    summary = {
        k: mean(k)
        for k in ("compute_threads_share", "other_threads_share", "in_decode_share", "outside_decode_ms_per_step")
    }
    print(f"| four streams × {CHAT_MAX_TOKENS} tokens, mean of {ROUNDS} rounds | share |\n|---|---:|")
    print(f"| CPU in llama.cpp's {N_COMPUTE} compute threads | {100 * summary['compute_threads_share']:.1f}% |")
    print(f"| CPU in every other thread (HTTP, events) | {100 * summary['other_threads_share']:.1f}% |")
    print(f"| wall time inside llama_decode | {100 * summary['in_decode_share']:.1f}% |")
    print(f"| step work outside llama_decode, per step | {summary['outside_decode_ms_per_step']:.2f} ms |")
    knobs = {"rounds": ROUNDS, "streams": STREAMS, "max_tokens": CHAT_MAX_TOKENS, "n_threads": N_THREADS}
    OUT.write_text(json.dumps({"knobs": knobs, "rounds": rounds, "mean": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
