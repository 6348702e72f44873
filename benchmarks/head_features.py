"""Tune the sentiment head's L2 penalty on cached features (train: ChnSentiCorp train; select: dev).

Features are what `allinone train-head` uses: the final hidden state at the answer position plus the
prompt's label scores, one pass per text. They are cached in CACHE so retuning takes seconds.
Run: .venv/bin/python benchmarks/head_features.py   (writes benchmarks/results/head_l2.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# --- knobs ---------------------------------------------------------------------------------------
N_TRAIN = 2000  # first N train texts that are not in dev or test
N_DEV = 600  # first N dev texts
L2S = [1.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
CACHE = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/head_features.npz")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOMAINS = ROOT / "tests" / "data" / "sentiment_domains.jsonl"
OUT = ROOT / "benchmarks" / "results" / "head_l2.json"


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def features(rows: list[dict[str, str]]) -> tuple[np.ndarray, list[str]]:
    from allinone.classify import label_scores, score_words
    from allinone.router import Router
    from allinone.settings import Settings

    router = Router(Settings())
    task = router.task("sentiment")
    out = []
    for row in rows:
        s = score_words(router.engine, task, task.truncation.apply(row["text"])[0], hidden=True)
        assert s.hidden is not None
        out.append([*s.hidden, *label_scores(task, s.logprobs)])
    return np.asarray(out), [r["label"] for r in rows]


def main() -> None:
    from allinone.head import train_head

    held = {r["text"] for split in ("dev", "test") for r in load(DATA / f"chnsenticorp_{split}.jsonl")}
    sets = {
        "train": [r for r in load(DATA / "chnsenticorp_train.jsonl") if r["text"] not in held][:N_TRAIN],
        "dev": load(DATA / "chnsenticorp_dev.jsonl")[:N_DEV],
        "domains": load(DOMAINS),
    }
    if CACHE.exists():
        cached = np.load(CACHE, allow_pickle=True)
        data = {k: (cached[f"{k}_x"], list(cached[f"{k}_y"])) for k in sets}
    else:
        data = {k: features(rows) for k, rows in sets.items()}
        np.savez(CACHE, **{f"{k}_x": x for k, (x, _) in data.items()}, **{f"{k}_y": y for k, (_, y) in data.items()})
    labels = ["positive", "negative"]
    prompt_only = {
        k: float(np.mean([("positive" if x[-2] > x[-1] else "negative") == g for x, g in zip(*data[k], strict=True)]))
        for k in ("dev", "domains")
    }
    print(f"prompt-only (uncalibrated scores): dev {prompt_only['dev']:.4f} domains {prompt_only['domains']:.4f}")
    results = []
    for l2 in L2S:
        head = train_head(data["train"][0].tolist(), data["train"][1], labels, l2=l2)
        acc = {}
        for k in ("dev", "domains"):
            x, gold = data[k]
            pred = [max(p := head.probabilities(row[:-2].tolist(), row[-2:].tolist()), key=p.__getitem__) for row in x]
            acc[k] = float(np.mean([a == b for a, b in zip(pred, gold, strict=True)]))
        results.append({"l2": l2, "train": head.info["train_accuracy"], **acc})
        print(f"l2={l2:<7g} train {head.info['train_accuracy']:.4f} dev {acc['dev']:.4f} domains {acc['domains']:.4f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"n_train": N_TRAIN, "n_dev": N_DEV, "prompt_only": prompt_only, "results": results}, indent=1)
        + "\n"
    )


if __name__ == "__main__":
    main()
