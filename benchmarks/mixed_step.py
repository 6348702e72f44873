"""Reply tokens decoded apart from a large prompt (Scheduler._batches), against one decode for the whole step.

In process, the server's settings: four long replies stream (greedy, so both ways do the same work) while sentiment
requests come one at a time, a second apart; each classification's time is filed by how many tokens the replies had
generated when it was sent. The two ways alternate round by round on the same engine (the split switched off by
raising scheduler.SPLIT_TOKENS past n_batch). llama.cpp's CPU flash attention computes batches of 64 tokens or more
in tiles of 64 query rows; a reply's token in a tile makes all its rows attend over the replies' cells, which
interleave in the unified cache, so the cost grows with the replies' length.

Run: .venv/bin/python benchmarks/mixed_step.py (prints a table, writes benchmarks/results/mixed_step.json)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROUNDS = 4
STREAMS = 4
REPLY_TOKENS = 384
PHASES = ((0, 128), (128, 256), (256, REPLY_TOKENS))  # tokens the replies had generated when a text was sent
N_THREADS = 2
N_CTX = 8192
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "mixed_step.json"
PAUSE_S = 1.0  # between classifications, so that the replies move on
PROMPT = "Write a long story about a lighthouse keeper and a storm, in English, with many chapters."


def texts(n: int) -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["text"][:1000] for line, _ in zip(f, range(n), strict=False)]


def one_round(service: Any, sample: list[str]) -> dict[str, Any]:
    """Four replies stream while the texts are classified one after another (from the start, a second apart):
    each classification's seconds with the replies' generated tokens when it was sent, and the replies' tokens/s."""
    from allinone.engines.base import Conversation, GenParams, Message

    conversation = Conversation.of([Message("user", PROMPT)])
    counts = [0] * STREAMS
    done = threading.Event()

    def reply(i: int) -> None:
        params = GenParams(REPLY_TOKENS, 0.0, 1.0, seed=i)
        for chunk in service.engine.stream(conversation, params):
            if chunk.text:
                counts[i] += 1

    threads = [threading.Thread(target=reply, args=(i,)) for i in range(STREAMS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()

    def waiter() -> None:
        for t in threads:
            t.join()
        done.set()

    threading.Thread(target=waiter).start()
    scored: list[tuple[int, float]] = []
    k = 0
    while not done.is_set():
        generated = min(counts)
        s = time.perf_counter()
        service.classify("sentiment", sample[k % len(sample)])
        scored.append((generated, time.perf_counter() - s))
        k += 1
        done.wait(PAUSE_S)
    wall = time.perf_counter() - t0
    return {"scored": scored, "reply_tok_s": sum(counts) / wall, "reply_tokens": list(counts)}


def main() -> None:
    from allinone.engines import scheduler
    from allinone.service import TaskService
    from allinone.settings import Settings

    sample = texts(40)
    split_at = scheduler.SPLIT_TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), n_threads=N_THREADS, n_ctx=N_CTX)
        service = TaskService(settings)
        service.classify("sentiment", sample[0])  # warm: the prefix cached
        ways: dict[str, list[dict[str, Any]]] = {"apart": [], "together": []}
        for r in range(ROUNDS):
            for way in ("apart", "together") if r % 2 == 0 else ("together", "apart"):
                scheduler.SPLIT_TOKENS = split_at if way == "apart" else 1 << 30
                ways[way].append(one_round(service, sample[r:] + sample[:r]))
                print(f"round {r} {way}: replies {ways[way][-1]['reply_tok_s']:.1f} tok/s", file=sys.stderr)
        scheduler.SPLIT_TOKENS = split_at
    rows: list[dict[str, Any]] = []
    for lo, hi in PHASES:
        row: dict[str, Any] = {"generated": f"{lo}-{hi}"}
        for way, runs in ways.items():
            secs = [s for run in runs for g, s in run["scored"] if lo <= g < hi]
            row[f"{way}_p50_s"] = round(statistics.median(secs), 3) if secs else None
            row[f"{way}_n"] = len(secs)
        rows.append(row)
    replies = {way: round(statistics.median(r["reply_tok_s"] for r in runs), 2) for way, runs in ways.items()}
    full = all(t == REPLY_TOKENS for runs in ways.values() for r in runs for t in r["reply_tokens"])
    out = {
        "rounds": ROUNDS,
        "streams": STREAMS,
        "reply_tokens": REPLY_TOKENS,
        "split_tokens": split_at,
        "all_replies_full": full,
        "sentiment_by_phase": rows,
        "replies_tok_s": replies,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"{'replies had generated':<22} {'apart p50':>10} {'together p50':>13} {'ratio':>6} {'n':>5}")
    for row in rows:
        a, t = row["apart_p50_s"], row["together_p50_s"]
        ratio = f"{a / t:.2f}" if a and t else "-"
        print(f"{row['generated']:<22} {a!s:>10} {t!s:>13} {ratio:>6} {row['apart_n']:>5}")
    print(f"replies' aggregate, median of rounds: apart {replies['apart']} tok/s, together {replies['together']} tok/s")
    if not full:
        print("note: a reply ended before its REPLY_TOKENS; rounds then do unequal work")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
