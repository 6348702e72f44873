"""How the sentiment task's settings were chosen: variants scored on ChnSentiCorp train/dev only.

One forward pass per prompt variant scores every candidate verbaliser word, so verbaliser sets and
contextual calibration are compared on the same pass. Few-shot examples come from the train split by
a fixed rule (shortest-first among 20-60 character texts, alternating labels), never from dev/test.

Run: .venv/bin/python benchmarks/tune_sentiment.py  (writes benchmarks/results/tune_sentiment.json)
"""

from __future__ import annotations

import json
import math
import sys
import time
from itertools import product
from pathlib import Path

# --- knobs ---------------------------------------------------------------------------------------
N_DEV = 400  # first N dev texts
SHOTS = [0, 4, 8]  # few-shot example counts tried
WORDS = {"positive": ["正面", "积极", "好评"], "negative": ["负面", "消极", "差评"]}
VERBALISERS = {"one": 1, "three": 3}  # how many words per label (in WORDS order)
CONTENT_FREE = ["N/A", "无", "。"]
N_THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "tune_sentiment.json"


def load(split: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / f"chnsenticorp_{split}.jsonl").open(encoding="utf-8")]


def pick_examples(k: int) -> list[dict[str, str]]:
    """k train examples, alternating labels, shortest first among 20-60 characters."""
    train = [r for r in load("train") if 20 <= len(r["text"]) <= 60]
    by_label = {
        lab: sorted((r for r in train if r["label"] == lab), key=lambda r: len(r["text"]))
        for lab in ("positive", "negative")
    }
    out = []
    for i in range(k // 2):
        out += [by_label["positive"][i * 7], by_label["negative"][i * 7]]  # spread, not near-duplicates
    return [{"input": r["text"], "output": r["label"]} for r in out]


def task_variant(base: object, shots: int) -> object:
    from allinone.tasks import Task

    data = base.model_dump()  # type: ignore[attr-defined]
    data["examples"] = pick_examples(shots)
    data["labels"] = [{**lab, "words": WORDS[lab["id"]]} for lab in data["labels"]]
    data["calibration"] = None
    return Task.model_validate(data)


def word_logprobs(engine: object, task: object, text: str) -> list[float]:
    from allinone.classify import score_words

    text, _ = task.truncation.apply(text)  # type: ignore[attr-defined]
    return score_words(engine, task, text).logprobs  # type: ignore[arg-type]


def accuracy(rows: list[tuple[str, list[float]]], n_words: int, bias: list[float] | None) -> float:
    right = 0
    for gold, lp in rows:
        pos = math.log(sum(math.exp(x) for x in lp[:n_words]))
        neg = math.log(sum(math.exp(x) for x in lp[3 : 3 + n_words]))
        if bias:
            pos, neg = pos - bias[0], neg - bias[1]
        right += ("positive" if pos > neg else "negative") == gold
    return right / len(rows)


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    service = TaskService(Settings(n_threads=N_THREADS))
    base = service.task("sentiment")
    dev = load("dev")[:N_DEV]
    results = []
    for shots in SHOTS:
        task = task_variant(base, shots)
        start = time.perf_counter()
        rows = [(r["label"], word_logprobs(service.engine, task, r["text"])) for r in dev]
        secs = time.perf_counter() - start
        free = [word_logprobs(service.engine, task, t) for t in CONTENT_FREE]
        for (vname, n_words), calibrate in product(VERBALISERS.items(), (False, True)):
            bias = None
            if calibrate:
                probs = []
                for lp in free:
                    pos = math.log(sum(math.exp(x) for x in lp[:n_words]))
                    neg = math.log(sum(math.exp(x) for x in lp[3 : 3 + n_words]))
                    z = math.log(math.exp(pos) + math.exp(neg))
                    probs.append((math.exp(pos - z), math.exp(neg - z)))
                bias = [math.log(sum(p[i] for p in probs) / len(probs)) for i in (0, 1)]
            acc = accuracy(rows, n_words, bias)
            results.append(
                {
                    "shots": shots,
                    "verbaliser": vname,
                    "calibrated": calibrate,
                    "dev_accuracy": acc,
                    "n_dev": len(dev),
                    "texts_per_s": len(dev) / secs,
                }
            )
            print(
                f"shots={shots} words={vname:<5} calibrated={calibrate!s:<5} dev acc={acc:.4f} "
                f"({len(dev) / secs:.2f} texts/s)",
                flush=True,
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"examples": {k: pick_examples(k) for k in SHOTS}, "results": results}, ensure_ascii=False, indent=1)
        + "\n"
    )


if __name__ == "__main__":
    main()
