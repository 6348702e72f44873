"""Routing accuracy of `auto` on the labelled routing set: the model picks a task for each input.

Run: ALLINONE_N_THREADS=1 .venv/bin/python benchmarks/routing.py [dev|test|all]
(prints accuracy per split and task, the confusion matrix and the misses; writes benchmarks/results/routing.json)
The prompt and descriptions were tuned on the `dev` split only; `test` is the held-out figure.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from allinone.service import TaskService
from allinone.settings import Settings

# --- knobs ---------------------------------------------------------------------------------------
SPLIT = sys.argv[1] if len(sys.argv) > 1 else "all"  # dev, test or all
TARGET = 0.85

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "routing.jsonl"
OUT = ROOT / "benchmarks" / "results" / "routing.json"


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if SPLIT == "all" or r["split"] == SPLIT]
    service = TaskService(Settings())
    service.engine  # noqa: B018 - load before timing
    preds, times = [], []
    for row in rows:
        start = time.perf_counter()
        chosen = service.pick_task(row["text"])
        times.append(time.perf_counter() - start)
        preds.append({**row, "predicted": chosen.task, "probability": round(chosen.probability, 4)})
    tasks = sorted({r["task"] for r in rows})

    def accuracy(subset: list[dict[str, object]]) -> float:
        return sum(p["predicted"] == p["task"] for p in subset) / max(1, len(subset))

    result = {
        "n": len(preds),
        "accuracy": round(accuracy(preds), 4),
        "target": TARGET,
        "by_split": {s: round(accuracy([p for p in preds if p["split"] == s]), 4) for s in ("dev", "test")},
        "by_task": {t: round(accuracy([p for p in preds if p["task"] == t]), 4) for t in tasks},
        "confusion": {t: dict(Counter(p["predicted"] for p in preds if p["task"] == t)) for t in tasks},
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "model": service.engine.info.model,
        "misses": [p for p in preds if p["predicted"] != p["task"]],
    }
    print(f"{result['n']} inputs ({SPLIT}): accuracy {result['accuracy']:.4f}  (target {TARGET})")
    print("by split: " + "  ".join(f"{s} {v:.4f}" for s, v in result["by_split"].items()))
    for t in tasks:
        print(f"  {t:<10} {result['by_task'][t]:.2f}  {result['confusion'][t]}")
    for m in result["misses"]:
        print(f"  miss: {m['task']} -> {m['predicted']} ({m['probability']:.2f})  {m['text'][:60]}")
    print(f"routing p50 {result['p50_ms']} ms")
    if SPLIT == "all":
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
