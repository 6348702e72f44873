"""Where the streaming gap to llama-server lies: in our engine, or in our HTTP path.

Three ways to run the same chat streams, round after round, the order reversed every other round: llama.cpp's
`llama-server` over HTTP, `allinone serve` over HTTP (both as concurrency.py starts them), and our engine in this
process (the same settings as the server, the streams read by threads). One stream and four streams, each to
CHAT_MAX_TOKENS, all with the chat task's DRY (concurrency.peer_sampling); rounds in which a stream ended early are
not counted (four streams would be three). Ratios are per round, against llama-server in the same round, so the
machine's drift falls on all three alike. For one stream the script also reads how long our steps take in and around
`llama_decode`, against llama-server's own time per generated token (`timings.predicted_per_token_ms`, non-streamed
requests alternating with ours): what is left inside the decode is llama.cpp's work as our context is configured,
the rest is our step's Python.

Run: .venv/bin/python benchmarks/stream_gap.py   (prints a table, writes benchmarks/results/stream_gap.json)
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from concurrency import (
    CHAT_MAX_TOKENS,
    MAX_TRIES,
    N_CTX,
    N_THREADS,
    STARTUP_TIMEOUT_S,
    STORY,
    free_port,
    peer_args,
    peer_sampling,
    start_pair,
    stop,
    streams,
)
from peer import ensure_llama_server
from serving import LIMITS, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
ROUNDS = {1: 6, 4: 4}  # rounds per number of streams
OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "stream_gap.json"
WAYS = ("peer", "http", "inproc")


def full(tokens: list[int]) -> bool:
    return all(t == CHAT_MAX_TOKENS for t in tokens)


async def over_http(url: str, model: str, n: int, seed: int, fields: dict[str, Any] | None) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600, limits=LIMITS) as client:
        m = await streams(client, url, model, n, seed=seed, fields=fields)
    return {"aggregate_tok_s": m["aggregate_tok_s"], "full": full(m["tokens"])}


class InProcess:
    """Our engine, as `allinone serve` builds it, with its streams read by threads (no HTTP)."""

    def __init__(self, gguf: Path, home: Path) -> None:
        from allinone.engines.base import Conversation, Message
        from allinone.service import TaskService
        from allinone.settings import Settings

        settings = Settings(home=home, model=str(gguf), n_threads=N_THREADS, n_ctx=N_CTX)
        self.engine: Any = TaskService(settings).engine
        self.conversation = Conversation.of([Message(m["role"], m["content"]) for m in STORY])
        from allinone.tasks import load_tasks

        g = load_tasks()["chat"].generation  # what allinone-chat samples with, the request's temperature aside
        self.top_p, self.dry_multiplier = g.top_p, g.dry_multiplier

    def _one(self, seed: int, tokens: list[int]) -> None:
        from allinone.engines.base import GenParams

        params = GenParams(CHAT_MAX_TOKENS, 0.8, self.top_p, seed=seed, dry_multiplier=self.dry_multiplier)
        for chunk in self.engine.stream(self.conversation, params):
            if chunk.usage is not None:
                tokens.append(chunk.usage.completion_tokens)

    def streams(self, n: int, seed: int) -> dict[str, Any]:
        """n streams at once, as concurrency.streams measures them: all tokens over the wall time until the last."""
        tokens: list[int] = []
        threads = [threading.Thread(target=self._one, args=(seed + i, tokens)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"aggregate_tok_s": sum(tokens) / (time.perf_counter() - t0), "full": len(tokens) == n and full(tokens)}

    def step_times(self, seed: int) -> dict[str, float]:
        """One stream: wall and `llama_decode` milliseconds per step."""
        from allinone.engines.base import GenParams

        params = GenParams(CHAT_MAX_TOKENS, 0.8, self.top_p, seed=seed, dry_multiplier=self.dry_multiplier)
        chunks = self.engine.stream(self.conversation, params)
        next(chunks)  # the prompt is computed: from here on, one token a step
        before, t0 = self.engine.busy(), time.perf_counter()
        for _ in chunks:
            pass
        wall, after = time.perf_counter() - t0, self.engine.busy()
        n = after.steps - before.steps
        return {"wall_ms": 1000 * wall / n, "decode_ms": 1000 * (after.seconds - before.seconds) / n}


def peer_per_token_ms(url: str, seed: int, fields: dict[str, Any]) -> float:
    body = {"messages": STORY, "max_tokens": CHAT_MAX_TOKENS, "temperature": 0.8, "seed": seed, **fields}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return float(r.json()["timings"]["predicted_per_token_ms"])


def measure(urls: dict[str, str], local: InProcess) -> dict[str, Any]:
    model = {"peer": "default", "http": "allinone-chat"}
    fields = {"peer": peer_sampling()}  # ours adds the same from the chat task

    def once(way: str, n: int, seed: int) -> dict[str, Any]:
        if way == "inproc":
            return local.streams(n, seed)
        return asyncio.run(over_http(urls[way], model[way], n, seed, fields.get(way)))

    def run(way: str, n: int, seed: int) -> dict[str, Any]:
        """Streams that all run to CHAT_MAX_TOKENS: a try where one ended early is run again with the next seeds."""
        for attempt in range(MAX_TRIES):
            got = once(way, n, seed + attempt * n)
            if got["full"]:
                break
        return got

    for way in WAYS:  # warm: prefixes cached, first decodes done
        once(way, 1, 0)
    out: dict[str, Any] = {}
    for n, rounds in ROUNDS.items():
        rows: list[dict[str, Any]] = []
        for r in range(rounds):
            row = {way: run(way, n, 100 * r) for way in (WAYS if r % 2 == 0 else WAYS[::-1])}
            rows.append(row)
            print(f"{n} stream(s), round {r}: " + ", ".join(f"{w} {row[w]['aggregate_tok_s']:.1f}" for w in WAYS))
        full = [row for row in rows if all(row[w]["full"] for w in WAYS)]
        out[f"{n}_streams"] = {
            "rounds": rows,
            "counted": len(full),
            **{
                f"{w}_per_peer": statistics.median(
                    row[w]["aggregate_tok_s"] / row["peer"]["aggregate_tok_s"] for row in full
                )
                for w in ("http", "inproc")
            },
            **{f"{w}_tok_s": statistics.median(row[w]["aggregate_tok_s"] for row in full) for w in WAYS},
        }
    steps: list[dict[str, float]] = []
    for r in range(ROUNDS[1]):
        pair = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
        got: dict[str, float] = {}
        for who in pair:
            if who == "ours":
                got.update(local.step_times(200 + r))
            else:
                got["peer_ms"] = peer_per_token_ms(urls["peer"], 200 + r, fields["peer"])
        steps.append(got)
    out["one_stream_step"] = {
        "rounds": steps,
        "decode_per_peer_token": statistics.median(s["decode_ms"] / s["peer_ms"] for s in steps),
        "wall_per_peer_token": statistics.median(s["wall_ms"] / s["peer_ms"] for s in steps),
        "outside_decode_ms": statistics.median(s["wall_ms"] - s["decode_ms"] for s in steps),
    }
    return out


def table(res: dict[str, Any]) -> str:
    lines = [
        "| streams | llama-server, HTTP | ours, HTTP | ours, in process | counted rounds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in ROUNDS:
        r = res[f"{n}_streams"]
        lines.append(
            f"| {n} | {r['peer_tok_s']:.1f} tok/s | {r['http_tok_s']:.1f} tok/s ({r['http_per_peer']:.2f}) | "
            f"{r['inproc_tok_s']:.1f} tok/s ({r['inproc_per_peer']:.2f}) | {r['counted']} |"
        )
    s = res["one_stream_step"]
    lines.append(
        f"\none stream, per token against llama-server's: our llama_decode {s['decode_per_peer_token']:.3f}, our whole "
        f"step {s['wall_per_peer_token']:.3f} ({s['outside_decode_ms']:.2f} ms outside the decode)"
    )
    return "\n".join(lines)


def main() -> None:
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf = resolve_model("default", Settings()).path
    binary = ensure_llama_server()
    ports = {name: free_port() for name in ("peer", "ours")}
    urls = {"peer": f"http://127.0.0.1:{ports['peer']}", "http": f"http://127.0.0.1:{ports['ours']}"}
    peer = peer_args(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        procs = start_pair(binary, peer, gguf, ports, home)
        try:
            for name, proc in procs.items():
                wait_healthy(proc, ports[name], STARTUP_TIMEOUT_S, 0.5)
            res = measure(urls, InProcess(gguf, home / "inproc"))
        finally:
            stop(list(procs.values()))
    print(table(res))
    knobs = {"rounds": ROUNDS, "chat_max_tokens": CHAT_MAX_TOKENS, "n_threads": N_THREADS, "n_ctx": N_CTX}
    knobs |= {"peer_args": peer[2:], "machine": platform.processor()}
    OUT.write_text(json.dumps({"knobs": knobs, **res}, indent=2) + "\n")


if __name__ == "__main__":
    main()
