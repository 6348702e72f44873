"""Load and soak: CLIENTS concurrent clients for DURATION_S seconds against a real `allinone serve` on 127.0.0.1,
mixing sentiment (/analyze) and chat (/v1/tasks/chat, one session per client).

Reports throughput, p50/p99 latency of the answered requests, responses by status (only 200 and 429 are
acceptable: a full queue answers 429 at once, and the client waits its Retry-After), and the server's RSS
after a warm-up of the same load (the saved chat states fill their bounded cache) and at the end (growth must
stay under 10%), and the share of the measured run's wall time the model spent computing (/metrics: near 1, the
load is bound by compute). Bounded: no request starts after WARMUP_S + DURATION_S and each has REQUEST_TIMEOUT_S.

Then, on the same server with the clients stopped, the model's cost of each kind of request, sent COST_CONCURRENCY
at a time: its /metrics busy seconds divided by the number sent (every text the clients draw from for sentiment,
whose cost grows with the text's length; COST_CHATS turns for chat). From those costs, the most answered
requests a second the measured run's mix of answers could reach with the model computing all the time: the
ceiling of this machine for that mix, an estimate (the costs are taken without the clients' own load on the cores,
and under load a step can mix kinds; the classifications' lane runs COST_CONCURRENCY at a time there too).

Run: .venv/bin/python benchmarks/load.py   (prints a table, writes benchmarks/results/load.json)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from allinone.models import resolve_model
from allinone.settings import Settings
from serving import metric, rss_mb, wait_healthy

# --- knobs ---------------------------------------------------------------------------------------
CLIENTS = 16
DURATION_S = 60.0
WARMUP_S = 30.0  # the same load first, unmeasured: the KV-state cache (ALLINONE_CACHE_MB) fills, then RSS is read
# A KV-state cache small enough to be full by the end of the warm-up (16 chat sessions of ~7 MB each), so
# that RSS growth in the measured part shows leaks rather than the bounded cache still filling up.
CACHE_MB = 64
CHAT_SHARE = 0.5  # share of requests that are chat turns; the rest are sentiment
CHAT_MAX_TOKENS = 24
SENTIMENT_TEXTS = 200  # the first texts of ChnSentiCorp dev, which the clients draw from
REQUEST_TIMEOUT_S = 120.0
N_THREADS = 2  # inference threads of the server (the reference machine's two cores)
RSS_GROWTH_LIMIT = 0.10
STARTUP_TIMEOUT_S = 300
SEED = 0
BUSY_METRIC = "allinone_engine_busy_seconds_total"
COST_CHATS = 16  # chat turns for the model's cost of one (sentiment: every text of the load, SENTIMENT_TEXTS)
COST_CONCURRENCY = 4  # at a time: sentiment prompts are computed together, chat replies decoded together

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "load.json"
CHAT_TEXTS = [
    "今天工作好累",
    "周末想去爬山，你有什么建议？",
    "我的猫生病了，好担心",
    "推荐一本好看的书吧",
    "谢谢你陪我聊天",
]


def texts(n: int) -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int, home: Path) -> subprocess.Popen[bytes]:
    settings = Settings()
    model = str(resolve_model(settings.model, settings).path)  # from the user's cache; the sessions go to `home`
    env = {**os.environ, "ALLINONE_N_THREADS": str(N_THREADS), "ALLINONE_MODEL": model, "ALLINONE_HOME": str(home)}
    env["ALLINONE_CACHE_MB"] = str(CACHE_MB)
    env["ALLINONE_LOG_FILE"] = str(home / "requests.log")
    cmd = [sys.executable, "-m", "allinone", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(server, port, STARTUP_TIMEOUT_S, poll_s=0.5)
    return server


async def client(i: int, url: str, end: float, sentiments: list[str], results: list[dict[str, object]]) -> None:
    rng = random.Random(SEED + i)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:
        while time.monotonic() < end:
            chat = rng.random() < CHAT_SHARE
            if chat:
                body = {"text": rng.choice(CHAT_TEXTS), "session_id": f"load-{i}", "max_tokens": CHAT_MAX_TOKENS}
                path = "/v1/tasks/chat"
            else:
                body, path = {"text": rng.choice(sentiments)}, "/analyze"
            start = time.perf_counter()
            try:
                r = await c.post(path, json=body)
                status = r.status_code
            except httpx.HTTPError as e:
                status, r = f"transport:{type(e).__name__}", None
            seconds = time.perf_counter() - start
            results.append({"kind": "chat" if chat else "sentiment", "status": status, "seconds": seconds})
            if status == 429 and r is not None:
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))


async def model_cost(url: str, bodies: list[tuple[str, dict[str, object]]]) -> float:
    """The model's compute seconds per request (/metrics), the requests sent COST_CONCURRENCY at a time."""
    pending = list(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:

        async def worker() -> None:
            while pending:
                path, body = pending.pop()
                r = await c.post(path, json=body)
                if r.status_code != 200:
                    raise SystemExit(f"FAILED: {path} answered {r.status_code} on the idle server: {r.text[:200]}")

        before = await busy_seconds(url)
        await asyncio.gather(*(worker() for _ in range(COST_CONCURRENCY)))
        return (await busy_seconds(url) - before) / len(bodies)


async def model_costs(url: str) -> dict[str, float]:
    """Model seconds per sentiment request and per chat turn, as the measured run sends them (the chat turns go on
    sessions the load has used, whose states are cached)."""
    rng = random.Random(SEED)
    sentiments: list[tuple[str, dict[str, object]]] = [("/analyze", {"text": t}) for t in texts(SENTIMENT_TEXTS)]
    chats: list[tuple[str, dict[str, object]]] = [
        ("/v1/tasks/chat", {"text": rng.choice(CHAT_TEXTS), "session_id": f"load-{i % CLIENTS}",
                            "max_tokens": CHAT_MAX_TOKENS})
        for i in range(COST_CHATS)
    ]  # fmt: skip
    return {"sentiment": await model_cost(url, sentiments), "chat": await model_cost(url, chats)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def busy_seconds(url: str) -> float:
    """The seconds the server's model has spent computing so far (its /metrics counter)."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:
        text = (await c.get("/metrics")).text
    return metric(text, BUSY_METRIC)


async def drive(url: str, pid: int) -> tuple[list[dict[str, object]], float, float, float]:
    """The measured run's results, its wall time, the RSS after the warm-up, and the share of the measured run's
    wall time the model spent computing (near 1: the load is bound by the model's compute, not by waiting)."""
    sentiments = texts(SENTIMENT_TEXTS)
    warm: list[dict[str, object]] = []
    start = time.monotonic()
    await asyncio.gather(*(client(i, url, start + WARMUP_S, sentiments, warm) for i in range(CLIENTS)))
    rss_start = rss_mb(pid)
    results: list[dict[str, object]] = []
    busy_start = await busy_seconds(url)
    start = time.monotonic()
    await asyncio.gather(*(client(i, url, start + DURATION_S, sentiments, results) for i in range(CLIENTS)))
    wall = time.monotonic() - start
    return results, wall, rss_start, (await busy_seconds(url) - busy_start) / wall


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(port, Path(tmp))
        try:
            rss_loaded = rss_mb(server.pid)
            results, wall, rss_start, busy = asyncio.run(drive(f"http://127.0.0.1:{port}", server.pid))
            rss_end = rss_mb(server.pid)
            costs = asyncio.run(model_costs(f"http://127.0.0.1:{port}"))
        finally:
            server.terminate()
            exit_code = server.wait(timeout=120)
    by_status = Counter(str(r["status"]) for r in results)
    by_kind = {k: dict(Counter(str(r["status"]) for r in results if r["kind"] == k)) for k in ("sentiment", "chat")}
    ok = [r for r in results if r["status"] == 200]
    rows = []
    for kind in ("all", "sentiment", "chat"):
        lat = [float(r["seconds"]) for r in ok if kind == "all" or r["kind"] == kind]  # type: ignore[arg-type]
        rows.append(
            {
                "kind": kind,
                "answered": len(lat),
                "per_s": round(len(lat) / wall, 2),
                "p50_s": round(pct(lat, 0.5), 3),
                "p99_s": round(pct(lat, 0.99), 3),
                "mean_s": round(statistics.fmean(lat), 3) if lat else None,
            }
        )
    growth = (rss_end - rss_start) / rss_start
    answered = {row["kind"]: row["answered"] for row in rows}
    bound = len(ok) / sum(answered[k] * costs[k] for k in costs)  # answers per second of model compute
    share = len(ok) / wall / bound  # of that bound, what the run reached
    bad = {s: n for s, n in by_status.items() if s not in ("200", "429")}
    summary = {
        "clients": CLIENTS,
        "duration_s": round(wall, 1),
        "chat_share": CHAT_SHARE,
        "chat_max_tokens": CHAT_MAX_TOKENS,
        "n_threads": N_THREADS,
        "cache_mb": CACHE_MB,
        "requests": len(results),
        "by_status": dict(by_status),
        "by_kind_status": by_kind,  # a full queue refuses a lane's requests: which kind got the 429s
        "errors_other_than_429": bad,
        "warmup_s": WARMUP_S,
        "rss_mb_loaded": round(rss_loaded, 1),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth": round(growth, 4),
        "rss_ok": growth < RSS_GROWTH_LIMIT,
        "server_exit_code_after_sigterm": exit_code,
        "model_busy_share": round(busy, 3),
        "cost_requests": {"sentiment": SENTIMENT_TEXTS, "chat": COST_CHATS},
        "cost_concurrency": COST_CONCURRENCY,
        "model_s_per_request": {k: round(v, 3) for k, v in costs.items()},
        "bound_per_s": round(bound, 2),  # the measured mix of answers with the model computing all the time
        "share_of_bound": round(share, 3),
        "latency": rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"{CLIENTS} clients, {wall:.0f} s, {len(results)} requests; by status: {dict(by_status)}; by kind: {by_kind}")
    print(f"{'kind':<10} {'answered':>8} {'per s':>7} {'p50 s':>7} {'p99 s':>7}")
    for row in rows:
        print(f"{row['kind']:<10} {row['answered']:>8} {row['per_s']:>7} {row['p50_s']:>7} {row['p99_s']:>7}")
    print(
        f"server RSS {rss_loaded:.0f} MB loaded, {rss_start:.0f} MB after warm-up -> {rss_end:.0f} MB ({growth:+.1%})"
    )
    print(f"the model computed for {busy:.0%} of the measured run's wall time")
    print(
        f"model seconds per request ({SENTIMENT_TEXTS} sentiment, {COST_CHATS} chat, {COST_CONCURRENCY} at a time, "
        "idle clients): " + ", ".join(f"{k} {v:.3f}" for k, v in costs.items())
    )
    print(f"this mix of answers with the model never idle: at most {bound:.2f}/s; the run reached {share:.0%}")
    print(f"exit code after SIGTERM: {exit_code}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if bad or growth >= RSS_GROWTH_LIMIT:
        raise SystemExit("FAILED: errors other than 429, or RSS grew by 10% or more")


if __name__ == "__main__":
    main()
