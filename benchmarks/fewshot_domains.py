"""Few-shot examples from several domains and both languages, against the 8 ChnSentiCorp hotel reviews.

The variant's 8 examples come from the head's training sets only (benchmarks/sentiment_data.py): 4
ChnSentiCorp train, 2 Weibo, 2 Amazon (English), picked by the rule of tune_sentiment.py (shortest first
among 10-60 characters, every 7th, alternating labels). Prompt-only accuracy of the variant on ChnSentiCorp
dev and every held-out domain, next to the current prompt's (read from head_features.py's cache of the same
sets, which holds its label scores). Keep the variant only if dev improves and no held-out domain drops; when dev
does not improve, the held-out sets are not scored.
Run: python benchmarks/fewshot_domains.py   (table + benchmarks/results/fewshot_domains.json)
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from head_features import CHUNK, DATA_DIR, cache_dir, rows_of, wait_for_cpu

# --- knobs ---------------------------------------------------------------------------------------
PICKS = [("train_chnsenticorp", 4), ("train_weibo", 2), ("train_amazon", 2)]
SETS = ["dev", "heldout_en_movies", "heldout_en_restaurants", "heldout_zh_social", "heldout_zh_movies"]
THREADS = 2
LABELS = ("positive", "negative")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fewshot_domains.json"


def pick(name: str, k: int) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (DATA_DIR / f"{name}.jsonl").open(encoding="utf-8")]
    short = [r for r in rows if 10 <= len(r["text"]) <= 60]
    by = {
        lab: sorted((r for r in short if r["label"] == lab), key=lambda r: len(r["text"]))
        for lab in ("positive", "negative")
    }
    out = []
    for i in range(k // 2):
        out += [by["positive"][i * 7], by["negative"][i * 7]]
    return out


def variant(base: Any) -> Any:
    from allinone.tasks import Task

    csc, weibo, amazon = (pick(name, k) for name, k in PICKS)
    examples = csc[:2] + weibo + amazon + csc[2:]  # domains interleaved, labels alternating
    data = base.model_dump()
    data["examples"] = [{"input": r["text"], "output": r["label"]} for r in examples]
    return Task.model_validate(data)


def prompt_accuracy(engine: Any, task: Any, name: str) -> float:
    from allinone.classify import conversation, label_scores

    words = [w for label in task.labels for w in label.words]

    def right(row: dict[str, str]) -> bool:
        text = task.truncation.apply(row["text"], engine.count_tokens)[0]
        pos, neg = label_scores(task, engine.score(conversation(task, text), words).logprobs)
        return ("positive" if pos > neg else "negative") == row["label"]

    rows, hits = rows_of(name), []
    with ThreadPoolExecutor(THREADS) as pool:
        for at in range(0, len(rows), CHUNK):
            wait_for_cpu()
            hits += pool.map(right, rows[at : at + CHUNK])
    return sum(hits) / len(hits)


def cached_accuracy(task: Any, name: str) -> float:
    d = np.load(cache_dir(task) / f"{name}.npz")
    pred = np.where(d["scores"][:, 0] > d["scores"][:, 1], "positive", "negative")
    return float((pred == d["y"]).mean())


def main() -> None:
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    base = load_tasks()["sentiment"]
    task = variant(base)
    wait_for_cpu()
    engine = LlamaCppEngine(ensure_default(Settings().models_dir), name="default", n_ctx=8192, n_threads=2)
    results = {}
    try:
        for name in SETS:
            results[name] = {"current": cached_accuracy(base, name), "variant": prompt_accuracy(engine, task, name)}
            print(name, results[name], flush=True)
            if name == "dev" and results[name]["variant"] <= results[name]["current"]:
                break  # not kept whatever the held-out sets say: they are not scored
    finally:
        engine.close()
    keep = (
        len(results) == len(SETS)
        and results["dev"]["variant"] > results["dev"]["current"]
        and all(r["variant"] >= r["current"] for n, r in results.items() if n != "dev")
    )
    examples = [ex.model_dump() for ex in task.examples]
    OUT.write_text(json.dumps({"examples": examples, "results": results, "keep": keep}, ensure_ascii=False, indent=1))
    print("| set | current 8 hotel examples | 8 examples, 3 domains, 2 languages |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['current']:.1f}% | {100 * r['variant']:.1f}% |")
    print(f"keep the variant: {keep}")


if __name__ == "__main__":
    main()
