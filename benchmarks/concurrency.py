"""Serving several users: `allinone serve` side by side with llama.cpp's `llama-server` on the same GGUF, one run.

Both servers run at once with the same threads; every scenario runs on one, then the other, round after round, so
the load of a shared machine falls on both alike (compare the ratios). The peer gets the same prompts: the sentiment
task's system prompt and examples as a chat completion with `max_tokens: 1` and top logprobs, and the same chat
messages with the same sampling: our chat task adds DRY to every chat request (allinone-chat), so the peer's chat
requests carry the same DRY fields (peer_sampling), and both do the same work per token. A third server, `allinone
serve --engine openai` in front of the peer, measures scale-out. Both get the same GGUF; ours loads it, as by
default, through the widened copy it makes at start (widen.py: the same weight values, Q5_0 stored as Q8_0); with
ALLINONE_WIDEN=off, ours loads the file as it is and the results go to concurrency_widen_off.json.

Rows: idle sentiment latency; one stream's decode speed; four streams' aggregate speed and time to first token;
the slowest of three sentiment requests sent 1 s into four streams, and of the same three sent together to the idle
server (their own compute, with nothing to wait for); four streams through the scale-out server.
The stream rows count only tries in which every stream ran to max_tokens (a story that ends early would make
four streams three, and the servers sample different stories), so both do the same work. The JSON keeps every
round's figure beside the medians.
Run: .venv/bin/python benchmarks/concurrency.py   (builds llama-server once, see peer.py; writes
benchmarks/results/concurrency.json)
"""

from __future__ import annotations

import asyncio
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
from typing import Any

import httpx

from allinone.engines.llamacpp import cpu_has_amx
from peer import ensure_llama_server
from serving import LIMITS, wait_healthy, weights

# --- knobs ---------------------------------------------------------------------------------------
N_SENTIMENT = 30  # ChnSentiCorp dev texts for idle latency
ROUNDS = 6  # rounds of each streaming scenario per server, the order alternating; medians are reported
ONE_STREAM_ROUNDS = 12  # of one stream: a short run (about 6 s), the noisiest row
STREAMS = 4
CHAT_MAX_TOKENS = 256
MAX_TRIES = 5  # of a four-stream scenario, until every stream runs to CHAT_MAX_TOKENS
N_THREADS = 2
N_CTX = 8192
PEER_SLOTS = 4
STARTUP_TIMEOUT_S = 300
STORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long, detailed story about a lighthouse keeper and the ships he saved."},
]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "concurrency.json"  # concurrency_widen_off.json with ALLINONE_WIDEN=off


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def peer_args(gguf: Path) -> list[str]:
    """llama-server's model and settings: our threads and context, PEER_SLOTS slots, weights repacked only where
    that cannot crash (CPUs without AMX)."""
    args = ["-m", str(gguf), "-c", str(N_CTX), "-np", str(PEER_SLOTS), "-t", str(N_THREADS)]
    return args + (["-nr"] if cpu_has_amx() else [])


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the servers, killing any that has not exited within 30 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def ours_env(home: Path, gguf: Path) -> dict[str, str]:
    """`allinone serve`'s environment in these runs: the GGUF, the threads and context of the peer, sessions in
    memory, a queue long enough that no scenario is refused."""
    env = {"ALLINONE_HOME": str(home), "ALLINONE_MODEL": str(gguf), "ALLINONE_N_THREADS": str(N_THREADS)}
    return env | {"ALLINONE_SESSION_STORE": "memory", "ALLINONE_MAX_QUEUE": "64", "ALLINONE_N_CTX": str(N_CTX)}


OURS_CMD = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1"]


def start_pair(
    binary: Path, peer: list[str], gguf: Path, ports: dict[str, int], home: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """llama-server (`peer` arguments) on ports["peer"] and `allinone serve` (ours_env, home `home`) on ports["ours"],
    their output and request log in `home`. Not yet answering: wait_healthy each; stop them with `stop`."""
    ours = ours_env(home, gguf) | {"ALLINONE_LOG_FILE": str(home / "o")}
    return {
        "peer": start([str(binary), *peer, "--host", "127.0.0.1", "--port", str(ports["peer"])], {}, home / "p"),
        "ours": start([*OURS_CMD, "--port", str(ports["ours"])], ours, home / "os"),
    }


# --- requests ------------------------------------------------------------------------------------


def dev_texts(n: int) -> list[str]:
    """The first n ChnSentiCorp dev texts, each cut to 1000 characters."""
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["text"][:1000] for line, _ in zip(f, range(n), strict=False)]


def peer_sampling() -> dict[str, Any]:
    """The DRY that our chat task applies to allinone-chat's requests, as llama-server's request fields."""
    from allinone.engines import dry
    from allinone.tasks import load_tasks

    return dry.server_fields(load_tasks()["chat"].generation.dry_multiplier)


async def stream_chat(
    client: httpx.AsyncClient, url: str, model: str, seed: int, fields: dict[str, Any] | None = None
) -> dict[str, float]:
    """One streamed chat completion (with more request `fields`): when it started, its first token came, it ended,
    and its token count."""
    body = {
        **(fields or {}),
        "model": model,
        "messages": STORY,
        "max_tokens": CHAT_MAX_TOKENS,
        "temperature": 0.8,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out: dict[str, float] = {"start": time.perf_counter()}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "first" not in out and any((c.get("delta") or {}).get("content") for c in event.get("choices", [])):
                out["first"] = time.perf_counter()
            if event.get("usage"):
                out["tokens"] = event["usage"]["completion_tokens"]
    out["end"] = time.perf_counter()
    return out


def sentiment_messages(text: str) -> list[dict[str, str]]:
    from allinone.tasks import load_tasks

    task = load_tasks()["sentiment"]
    return [{"role": m.role, "content": m.content} for m in [*task.fixed_messages(), task.user_message(text)]]


async def classify(client: httpx.AsyncClient, url: str, text: str, ours: bool) -> float:
    """Seconds for one sentiment answer: ours by label scoring, the peer by a one-token completion's logprobs."""
    t0 = time.perf_counter()
    if ours:
        r = await client.post(f"{url}/analyze", json={"text": text})
    else:
        body = {"messages": sentiment_messages(text), "max_tokens": 1, "temperature": 0}
        r = await client.post(f"{url}/v1/chat/completions", json={**body, "logprobs": True, "top_logprobs": 20})
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0


async def streams(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    n: int,
    then: Any = None,
    seed: int = 0,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """n streams at once (and, 1 s in, `then()`): aggregate tokens/s, each stream's time to first token."""
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(stream_chat(client, url, model, seed + i, fields)) for i in range(n)]
    extra = None
    if then is not None:
        await asyncio.sleep(1.0)
        extra = await then()
    runs = await asyncio.gather(*tasks)
    wall = max(r["end"] for r in runs) - t0
    return {
        "aggregate_tok_s": sum(r["tokens"] for r in runs) / wall,
        "ttft_s": [r["first"] - r["start"] for r in runs],
        "decode_tok_s": [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in runs],
        "tokens": [r["tokens"] for r in runs],
        "extra": extra,
    }


async def full_streams(
    client: httpx.AsyncClient, url: str, model: str, n: int, seed: int, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """n streams that all run to CHAT_MAX_TOKENS. A sampled story may end early (one stream of 13 tokens makes four
    streams three), and the two servers draw different stories from the same seed, so a try where a stream ended
    early is run again with the next seeds: every counted row does the same work."""
    for attempt in range(MAX_TRIES):
        m = await streams(client, url, model, n, seed=seed + attempt * n, fields=fields)
        if all(t == CHAT_MAX_TOKENS for t in m["tokens"]):
            break
    m["tries"] = attempt + 1
    return m


def four_streams(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """A server's four-stream rounds: the median aggregate, and how many tries each round took to run full."""
    return {
        "four_streams_aggregate_tok_s": statistics.median(m["aggregate_tok_s"] for m in tries),
        "four_streams_runs_tok_s": [m["aggregate_tok_s"] for m in tries],
        "four_streams_tries": [m["tries"] for m in tries],
        "four_streams_all_full": all(t == CHAT_MAX_TOKENS for m in tries for t in m["tokens"]),
    }


# --- the run -------------------------------------------------------------------------------------


async def measure(urls: dict[str, str], texts: list[str], sampling: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600, limits=LIMITS) as client:
        model = {"ours": "allinone-chat", "peer": "default", "scaleout": "allinone-chat"}
        fields = {"peer": sampling}  # ours and the scale-out server add the same from the chat task
        for name in ("ours", "peer"):  # warm: prefixes cached, first decodes done
            await classify(client, urls[name], texts[0], name == "ours")
            await stream_chat(client, urls[name], model[name], 0, fields.get(name))
        idle: dict[str, list[float]] = {"ours": [], "peer": []}
        for i, text in enumerate(texts):
            for name in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
                idle[name].append(await classify(client, urls[name], text, name == "ours"))
        three_idle: dict[str, list[float]] = {"ours": [], "peer": []}  # the busy row's texts with no streams
        for r in range(ROUNDS):
            for name in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                jobs = [classify(client, urls[name], t, name == "ours") for t in texts[3 * r : 3 * r + 3]]
                three_idle[name].append(max(await asyncio.gather(*jobs)))
        one: dict[str, list[float]] = {"ours": [], "peer": []}
        for r in range(ONE_STREAM_ROUNDS):
            for name in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                m = await full_streams(client, urls[name], model[name], 1, 1000 + 10 * r, fields.get(name))
                one[name].append(m["decode_tok_s"][0])
        many: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": [], "scaleout": []}
        busy: dict[str, list[float]] = {"ours": [], "peer": []}
        for r in range(ROUNDS):
            pair = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")  # who goes first alternates by round
            for name in (*pair, "scaleout") if r % 2 == 0 else ("scaleout", *pair):
                m = await full_streams(client, urls[name], model[name], STREAMS, 100 * r, fields.get(name))
                many[name].append(m)
            for name in pair:
                sample = texts[3 * r : 3 * r + 3]

                async def three(name: str = name, sample: list[str] = sample) -> list[float]:
                    jobs = [classify(client, urls[name], t, name == "ours") for t in sample]
                    return list(await asyncio.gather(*jobs))

                m = await streams(client, urls[name], model[name], STREAMS, three, fields=fields.get(name))
                busy[name].append(max(m["extra"]))
    med = statistics.median
    out: dict[str, Any] = {}
    for name in ("ours", "peer"):
        ttfts = [t for m in many[name] for t in m["ttft_s"]]
        out[name] = {
            "sentiment_p50_idle_s": med(idle[name]),
            "one_stream_decode_tok_s": med(one[name]),
            "one_stream_runs_tok_s": one[name],
            **four_streams(many[name]),
            "four_streams_ttft_p50_s": med(ttfts),
            "four_streams_ttft_max_s": max(ttfts),
            "three_sentiments_idle_slowest_s": med(three_idle[name]),
            "three_sentiments_under_four_streams_slowest_s": med(busy[name]),
        }
    out["scaleout"] = four_streams(many["scaleout"])
    return out


def table(res: dict[str, Any]) -> str:
    o, p = res["ours"], res["peer"]
    rows = [
        ("sentiment p50, idle", "sentiment_p50_idle_s", "s", "≤ peer"),
        ("one chat stream, decode", "one_stream_decode_tok_s", "tok/s", "≥ 0.95 × peer"),
        (f"{STREAMS} chat streams at once, aggregate", "four_streams_aggregate_tok_s", "tok/s", "≥ peer"),
        (f"time to first token, {STREAMS} streams, p50", "four_streams_ttft_p50_s", "s", "≤ 0.5 s"),
        (f"time to first token, {STREAMS} streams, max", "four_streams_ttft_max_s", "s", ""),
        ("the same 3 sentiment requests at once, idle, slowest", "three_sentiments_idle_slowest_s", "s", ""),
        (
            "3 sentiment requests 1 s into 4 streams, slowest",
            "three_sentiments_under_four_streams_slowest_s",
            "s",
            "≤ 1.0 s",
        ),
    ]
    lines = ["| | allinone serve | llama-server | ratio | target |", "|---|---:|---:|---:|---|"]
    for label, key, unit, target in rows:
        lines.append(f"| {label} | {o[key]:.2f} {unit} | {p[key]:.2f} {unit} | {o[key] / p[key]:.2f} | {target} |")
    s = res["scaleout"]["four_streams_aggregate_tok_s"]
    agg = p["four_streams_aggregate_tok_s"]
    lines.append(
        f"| scale-out: `serve --engine openai` → llama-server, {STREAMS} streams | {s:.2f} tok/s | {agg:.2f} tok/s "
        f"| {s / agg:.2f} | ≥ 0.90 × peer |"
    )
    return "\n".join(lines)


def main() -> None:
    from allinone.engines import llamacpp_file
    from allinone.models import resolve_model
    from allinone.settings import Settings

    gguf = resolve_model("default", Settings()).path
    binary = ensure_llama_server()
    texts, sampling = dev_texts(N_SENTIMENT), peer_sampling()
    ports = {name: free_port() for name in ("ours", "peer", "scaleout")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    peer = peer_args(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        procs = start_pair(binary, peer, gguf, ports, home)
        try:
            for name in ("peer", "ours"):
                wait_healthy(procs[name], ports[name], STARTUP_TIMEOUT_S, 0.5)
            scaleout = ours_env(home, gguf) | {"ALLINONE_LOG_FILE": str(home / "scaleout.log")}
            scaleout |= {"ALLINONE_ENGINE": "openai", "ALLINONE_OPENAI_BASE_URL": f"{urls['peer']}/v1"}
            procs["scaleout"] = start([*OURS_CMD, "--port", str(ports["scaleout"])], scaleout, home / "scaleout.out")
            wait_healthy(procs["scaleout"], ports["scaleout"], STARTUP_TIMEOUT_S, 0.5)
            res = asyncio.run(measure(urls, texts, sampling))
            loaded = llamacpp_file(gguf, Settings(home=home))  # the file ours loaded (made in its home by now)
        finally:
            stop(list(procs.values()))
    print(table(res))
    knobs: dict[str, Any] = {"n_sentiment": N_SENTIMENT, "rounds": ROUNDS, "one_stream_rounds": ONE_STREAM_ROUNDS}
    knobs |= {"streams": STREAMS, "chat_max_tokens": CHAT_MAX_TOKENS}
    knobs |= {"max_tries": MAX_TRIES, "peer_sampling": sampling}
    knobs |= {"n_threads": N_THREADS, "n_ctx": N_CTX, "peer_args": peer[2:], "machine": platform.processor()}
    knobs["widen"] = widen = Settings().widen  # ours inherits ALLINONE_WIDEN
    knobs["weights"] = weights(loaded, gguf)
    out = OUT if widen == "on" else OUT.with_name("concurrency_widen_off.json")
    out.write_text(json.dumps({"knobs": knobs, **res}, indent=2) + "\n")


if __name__ == "__main__":
    main()
