"""Core benchmark on the default model: sentiment latency, chat decode speed, cold start, peak RSS.

Run: .venv/bin/python benchmarks/core.py   (prints a table, writes benchmarks/results/core.json)
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from serving import engine_weights

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 300  # ChnSentiCorp dev texts timed for sentiment (in file order)
CHAT_PROMPTS = [
    "最近工作压力很大，晚上总是睡不着，有什么办法吗？",
    "Can you suggest a simple plan to start running three times a week?",
    "我想给妈妈准备一份生日惊喜，有什么建议？",
]
CHAT_MAX_TOKENS = 128
COLD_RUNS = 3  # fresh processes timed for cold start (model file already assembled)
TARGETS = {"sentiment_p50_s": 0.45, "chat_tokens_per_s": 25.0, "cold_start_s": 3.0, "peak_rss_mb": 1200.0}

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "core.json"

COLD_SCRIPT = """
import time
t0 = time.perf_counter()
from allinone.service import TaskService
from allinone.settings import Settings
service = TaskService(Settings())
service.engine
t1 = time.perf_counter()
service.classify("sentiment", "这家酒店服务太差了，再也不来了")
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def cold_start() -> dict[str, float]:
    loads, firsts, walls = [], [], []
    for _ in range(COLD_RUNS):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        load, first = map(float, out.stdout.split())
        loads.append(load)
        firsts.append(first)
    return {
        "cold_start_s": statistics.median(walls),
        "import_and_load_s": statistics.median(loads),
        "first_result_s": statistics.median(firsts),
    }


def sentiment(service: object) -> dict[str, float]:
    texts = [json.loads(line)["text"] for line in DATA.open(encoding="utf-8")][:N_TEXTS]
    service.classify("sentiment", "预热")  # type: ignore[attr-defined]  # evaluates and caches the task prefix
    times, new_tokens = [], []
    for text in texts:
        start = time.perf_counter()
        result = service.classify("sentiment", text)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
        new_tokens.append(result.usage.prompt_tokens - result.usage.cached_tokens)
    return {
        "sentiment_texts": len(texts),
        "sentiment_p50_s": statistics.median(times),
        "sentiment_p95_s": percentile(times, 0.95),
        "sentiment_mean_new_tokens": statistics.mean(new_tokens),
        "sentiment_texts_per_s": len(times) / sum(times),
    }


def chat(service: object) -> dict[str, float]:
    from allinone.chat import ChatSession
    from allinone.events import TaskCall

    rates, firsts = [], []
    for i, prompt in enumerate(CHAT_PROMPTS):
        call = TaskCall("chat", prompt, options={"max_tokens": CHAT_MAX_TOKENS, "seed": i}, session=ChatSession())
        stream = service.run(call)  # type: ignore[attr-defined]
        start = time.perf_counter()
        first_at = None
        last = None
        for event in stream:
            if first_at is None and getattr(event, "text", ""):
                first_at = time.perf_counter()
            last = event
        end = time.perf_counter()
        n = last.result.usage.completion_tokens if last is not None else 0
        if first_at is not None and n > 1:
            rates.append((n - 1) / (end - first_at))
            firsts.append(first_at - start)
    return {"chat_tokens_per_s": statistics.median(rates), "chat_first_token_s": statistics.median(firsts)}


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    results: dict[str, object] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    results.update(cold_start())
    settings = Settings()
    service = TaskService(settings)
    results["weights"] = engine_weights(service.engine, settings)
    results.update(sentiment(service))
    service.warm()  # as `serve` does before it is ready: the chat prefix of each language order is cached
    results.update(chat(service))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    print(f"{'metric':<28} {'value':>10} {'target':>10}")
    for key, value in results.items():
        if not isinstance(value, float | int):
            continue
        target = TARGETS.get(key)
        mark = ""
        if target is not None:
            ok = value >= target if key == "chat_tokens_per_s" else value <= target
            mark = f"{'<=' if key != 'chat_tokens_per_s' else '>='}{target:g} {'ok' if ok else 'MISSED'}"
        print(f"{key:<28} {value:>10.3f} {mark:>10}")
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
