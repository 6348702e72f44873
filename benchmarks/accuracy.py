"""Sentiment accuracy per domain, prompt-only and with the learned head, from one pass per text.

Every text goes through the same code as `allinone run sentiment` (TaskService, heads on): the result carries
both answers, label scoring alone (`prompt_probabilities`) and with the head (`probabilities`). Sets:
ChnSentiCorp dev, the held-out domains built by benchmarks/sentiment_data.py, the 48 texts written for the
tests, and ChnSentiCorp test only with --test (each such run is logged in results/test_looks.jsonl, so the
README can say how many looks at test each configuration took). Accuracies get 95% Wilson intervals; the
head's gain gets a paired 95% interval. Per-text predictions are kept in the JSON.
Run: python benchmarks/accuracy.py [--test] [--limit N]   (table + benchmarks/results/accuracy.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from head_choice import wilson
from head_features import DATA_DIR, wait_for_cpu

# --- knobs ---------------------------------------------------------------------------------------
HELD_OUT = ["en_movies", "en_restaurants", "zh_social", "zh_movies"]  # DATA_DIR/heldout_<name>.jsonl
THREADS = 2  # concurrent classify calls (the engine decodes them together)
CHUNK = 50  # texts between checks of the CPU signal

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOMAINS = ROOT / "tests" / "data" / "sentiment_domains.jsonl"
OUT = ROOT / "benchmarks" / "results" / "accuracy.json"
LOOKS = ROOT / "benchmarks" / "results" / "test_looks.jsonl"


def sets(test: bool) -> dict[str, Path]:
    out = {"chnsenticorp_dev": SHARED / "chnsenticorp_dev.jsonl"}
    if test:
        out["chnsenticorp_test"] = SHARED / "chnsenticorp_test.jsonl"
    out |= {name: DATA_DIR / f"heldout_{name}.jsonl" for name in HELD_OUT}
    out["written_for_tests"] = DOMAINS
    return out


def predict(service: Any, rows: list[dict[str, str]], name: str) -> list[dict[str, Any]]:
    def one(row: dict[str, str]) -> dict[str, Any]:
        r = service.classify("sentiment", row["text"])
        prompt = r.prompt_probabilities or r.probabilities
        return {
            "gold": row["label"],
            "prompt": max(prompt, key=prompt.__getitem__),
            "head": r.label,
            "p_prompt": round(prompt["positive"], 4),
            "p_head": round(r.probabilities["positive"], 4),
            "method": r.method,
        }

    preds: list[dict[str, Any]] = []
    with ThreadPoolExecutor(THREADS) as pool:
        for at in range(0, len(rows), CHUNK):
            wait_for_cpu()
            preds += pool.map(one, rows[at : at + CHUNK])
            print(f"{name}: {len(preds)}/{len(rows)}", file=sys.stderr, flush=True)
    return preds


def summary(preds: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(preds)
    right = {k: [p[k] == p["gold"] for p in preds] for k in ("prompt", "head")}
    acc = {k: sum(v) / n for k, v in right.items()}
    diff = [int(h) - int(p) for h, p in zip(right["head"], right["prompt"], strict=True)]
    mean = sum(diff) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diff) / max(n - 1, 1))
    return {
        "n": n,
        "prompt_only": acc["prompt"],
        "prompt_only_ci": wilson(acc["prompt"], n),
        "with_head": acc["head"],
        "with_head_ci": wilson(acc["head"], n),
        "gain": mean,
        "gain_ci": (mean - 1.96 * sd / math.sqrt(n), mean + 1.96 * sd / math.sqrt(n)),
    }


def configuration(service: Any) -> dict[str, str]:
    """What a test look measured: the prompt (fixed messages) and the head file, by hash."""
    task = service.task("sentiment")
    prompt = json.dumps([m.content for m in task.fixed_messages()], ensure_ascii=False).encode()
    head = task.head_path.read_bytes() if task.head_path else b""
    return {"prompt": hashlib.sha256(prompt).hexdigest()[:12], "head": hashlib.sha256(head).hexdigest()[:12]}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(results: dict[str, Any]) -> None:
    print("| set | texts | prompt-only (95% CI) | with head (95% CI) | head - prompt (95% CI) |")
    print("|---|---:|---|---|---|")
    for name, r in results.items():
        lo, hi = r["prompt_only_ci"]
        hlo, hhi = r["with_head_ci"]
        glo, ghi = r["gain_ci"]
        print(
            f"| {name} | {r['n']} | {pct(r['prompt_only'])}% ({pct(lo)}-{pct(hi)}) | "
            f"{pct(r['with_head'])}% ({pct(hlo)}-{pct(hhi)}) | "
            f"{100 * r['gain']:+.1f} ({100 * glo:+.1f} to {100 * ghi:+.1f}) |"
        )


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    args = argparse.ArgumentParser()
    args.add_argument("--test", action="store_true", help="also ChnSentiCorp test (logged as a look)")
    args.add_argument("--limit", type=int, default=None, help="first N texts of each set")
    opts = args.parse_args()
    service = TaskService(Settings(use_heads=True, n_threads=2))
    config = configuration(service)
    results, predictions = {}, {}
    start = time.perf_counter()
    for name, path in sets(opts.test).items():
        rows = [json.loads(line) for line in path.open(encoding="utf-8")][: opts.limit]
        predictions[name] = predict(service, rows, name)
        results[name] = summary(predictions[name])
    config["seconds"] = f"{time.perf_counter() - start:.0f}"
    if opts.test:
        look = {**config, "date": time.strftime("%Y-%m-%d"), "test": results["chnsenticorp_test"]}
        with LOOKS.open("a", encoding="utf-8") as f:
            f.write(json.dumps(look) + "\n")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"configuration": config, "results": results, "predictions": predictions}) + "\n")
    table(results)
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
