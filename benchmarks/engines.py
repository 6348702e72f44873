"""Engines side by side on the default weights: sentiment labels from transformers (the GGUF dequantized) vs
llama.cpp on ChnSentiCorp dev texts, their agreement, each engine's p50 latency and peak RSS.

Each engine runs in its own process (so peak RSS is its own), one after the other.
Run: .venv/bin/python benchmarks/engines.py   (prints a table, writes benchmarks/results/engines.json)
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

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 200  # ChnSentiCorp dev texts, in file order
ENGINES = ["llamacpp", "transformers"]
N_THREADS = 2  # both engines get the same CPU threads
AGREEMENT_TARGET = 0.95

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "engines.json"


def worker(engine: str) -> None:
    """One engine in this process: label the texts, print one JSON line with labels, times and peak RSS."""
    from allinone.service import TaskService
    from allinone.settings import Settings

    texts = [json.loads(line)["text"] for line in DATA.open(encoding="utf-8")][:N_TEXTS]
    start = time.perf_counter()
    service = TaskService(Settings(engine=engine, n_threads=N_THREADS))  # type: ignore[arg-type]
    service.engine  # noqa: B018
    load_s = time.perf_counter() - start
    service.classify("sentiment", "预热")  # evaluates and caches the task prefix
    labels, times = [], []
    for text in texts:
        t0 = time.perf_counter()
        labels.append(service.classify("sentiment", text).label)
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "engine": engine,
                "backend": service.engine.info.backend,
                "details": service.engine.info.details,
                "load_s": load_s,
                "p50_s": statistics.median(times),
                "mean_s": statistics.mean(times),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "labels": labels,
            }
        )
    )


def main() -> None:
    runs = {}
    for engine in ENGINES:
        out = subprocess.run([sys.executable, __file__, "--worker", engine], capture_output=True, text=True, check=True)
        runs[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = (runs[e]["labels"] for e in ENGINES)
    agree = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "texts": len(a),
        "n_threads": N_THREADS,
        "agreement": agree,
        "agreement_target": AGREEMENT_TARGET,
        "engines": {e: {k: v for k, v in r.items() if k != "labels"} for e, r in runs.items()},
        "labels": {e: r["labels"] for e, r in runs.items()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    print("| engine | weights | sentiment p50 | load | peak RSS |\n| --- | --- | ---: | ---: | ---: |")
    for e, r in runs.items():
        weights = "GGUF Q4_K_M" if e == "llamacpp" else f"GGUF dequantized to {r['details'].get('dtype')}"
        print(f"| {r['backend']} | {weights} | {r['p50_s']:.3f} s | {r['load_s']:.1f} s | {r['peak_rss_mb']:.0f} MB |")
    mark = "ok" if agree >= AGREEMENT_TARGET else "MISSED"
    print(f"\nlabel agreement on {len(a)} texts: {agree:.1%} (target >= {AGREEMENT_TARGET:.0%}: {mark})")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
    else:
        main()
