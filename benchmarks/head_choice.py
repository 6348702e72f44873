"""Choose the sentiment head on ChnSentiCorp dev and the held-out domains (never test), from cached features.

Reads the features benchmarks/head_features.py cached for the task's current prompt. For each variant a
logistic-regression head (allinone.head.train_head) is trained on a training set and scored on dev and
every held-out domain next to prompt-only label scoring:
  - training data: ChnSentiCorp alone (like the old head), the mix (ChnSentiCorp, Weibo, Amazon English), or the
    mix with twice the ChnSentiCorp texts;
  - features: the final hidden state and/or the mean after a layer, each plus the label scores;
  - L2 penalty, on every weight or on all but the label scores' ("toward the prompt": a strong penalty
    leaves the prompt's answer, recalibrated);
  - mixing head and prompt probabilities with a weight, and using the head only where it is confident,
    both learned leave-one-domain-out on the training mix (train on two domains, predict the third).
Run: python benchmarks/head_choice.py   (table + benchmarks/results/head_choice.json)
     python benchmarks/head_choice.py --add TRAIN   (only that training set's variants, replacing its saved rows)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from head_features import LAYERS, cache_dir

# --- knobs ---------------------------------------------------------------------------------------
TRAIN = {
    "chnsenticorp": ["train_chnsenticorp"],
    "mix": ["train_chnsenticorp", "train_weibo", "train_amazon"],
    "mix+csc": ["train_chnsenticorp", "train_chnsenticorp_more", "train_weibo", "train_amazon"],  # ChnSentiCorp 4,000
    "mix+csc_all": [  # every ChnSentiCorp train text (7,656 after removing repeats and dev/test texts)
        "train_chnsenticorp",
        "train_chnsenticorp_more",
        "train_chnsenticorp_rest",
        "train_weibo",
        "train_amazon",
    ],
}
FEATURES = ["final", *[f"mean{layer}" for layer in LAYERS], "mean15+final", "mean12+final", "mean18+final"]
L2S = [300.0, 1000.0, 3000.0, 10000.0]
FREE = [0, 2]  # label scores penalised (0) or not (2)
MIX = [round(0.1 * i, 1) for i in range(11)]  # weight of the head's probabilities
GATE = [0.5, 0.6, 0.7, 0.8, 0.9]  # use the head only where its top probability reaches this
HELD_OUT = ["heldout_en_movies", "heldout_en_restaurants", "heldout_zh_social", "heldout_zh_movies"]
MAX_DROP = 0.005  # the target: with head >= prompt-only - 0.5 points on every held-out domain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "head_choice.json"
Array = np.ndarray[Any, Any]


def load(name: str, which: str) -> tuple[Array, Array, Array]:
    """Features (chosen blocks + label scores), label scores, gold (1 = positive) of one cached set."""
    from allinone.tasks import load_tasks

    d = np.load(cache_dir(load_tasks()["sentiment"]) / f"{name}.npz")
    blocks = []
    for part in which.split("+"):
        if part == "final":
            blocks.append(d["final"])
        else:
            i = LAYERS.index(int(part.removeprefix("mean")))
            blocks.append(d["layers"][:, i * 896 : (i + 1) * 896])
    scores = d["scores"].astype(np.float64)
    return np.hstack([*blocks, scores]).astype(np.float64), scores, (d["y"] == "positive").astype(int)


def head_p(x_train: Array, y_train: Array, x: Array, l2: float, free: int) -> Array:
    """P(positive) of a head trained on (x_train, y_train), for the rows of x."""
    from allinone.head import train_head

    labels = ["positive", "negative"]
    head = train_head(x_train.tolist(), [labels[1 - y] for y in y_train], labels, l2=l2, free=free)
    z = ((x - head.mean) / head.scale) @ head.weight.T + head.bias
    return 1.0 / (1.0 + np.exp(-(z[:, 0] - z[:, 1])))


def prompt_p(scores: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-(scores[:, 0] - scores[:, 1])))


def combine(ph: Array, pp: Array, mix: float, gate: float) -> Array:
    """Head and prompt probabilities mixed with weight `mix`, where the head's top probability reaches `gate`."""
    mixed = mix * ph + (1 - mix) * pp
    return np.where(np.maximum(ph, 1 - ph) >= gate, mixed, pp)


def accuracy(p: Array, y: Array) -> float:
    return float(((p >= 0.5).astype(int) == y).mean())


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy over n texts."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def stack(names: list[str], which: str) -> tuple[Array, Array, Array]:
    parts = [load(n, which) for n in names]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def learn_mix_gate(train: str, which: str, l2: float, free: int) -> tuple[float, float]:
    """Mixing weight and gate that maximise mean accuracy on each training domain held out in turn."""
    names = TRAIN[train]
    domains = sorted({n.removesuffix("_more") for n in names})  # train_chnsenticorp_more is ChnSentiCorp too
    folds = []
    for out in domains:
        x, _, y = stack([n for n in names if n.removesuffix("_more") != out], which)
        xo, so, yo = stack([n for n in names if n.removesuffix("_more") == out], which)
        folds.append((head_p(x, y, xo, l2, free), prompt_p(so), yo))
    grid = [(m, g) for m in MIX for g in GATE]
    score = [np.mean([accuracy(combine(ph, pp, m, g), yo) for ph, pp, yo in folds]) for m, g in grid]
    return grid[int(np.argmax(score))]


def evaluate(train: str, which: str, l2: float, free: int, mix: float = 1.0, gate: float = 0.5) -> dict[str, Any]:
    x, _, y = stack(TRAIN[train], which)
    row: dict[str, Any] = {"train": train, "features": which, "l2": l2, "free": free, "mix": mix, "gate": gate}
    for name in ["dev", *HELD_OUT]:
        xs, ss, ys = load(name, which)
        pp = prompt_p(ss)
        ph = combine(head_p(x, y, xs, l2, free), pp, mix, gate)
        row[name] = {"n": len(ys), "prompt": accuracy(pp, ys), "head": accuracy(ph, ys)}
    row["worst_drop"] = min(row[n]["head"] - row[n]["prompt"] for n in HELD_OUT)
    return row


def show(row: dict[str, Any]) -> None:
    cells = "".join(f"{100 * row[n]['head']:>8.1f}" for n in ["dev", *HELD_OUT])
    label = f"{row['train']:<13}{row['features']:<14}{row['l2']:>7g}{row['free']:>3}{row['mix']:>5}{row['gate']:>5}"
    print(f"{label}{cells}{100 * row['worst_drop']:>8.1f}", flush=True)


def grid(train: str) -> list[dict[str, Any]]:
    """Every plain variant trained on `train`, then mixing and gating learned for its three best safe ones."""
    rows = []
    for which in FEATURES:
        for l2 in L2S:
            for free in FREE:
                rows.append(evaluate(train, which, l2, free))
                show(rows[-1])
    ok = [r for r in rows if r["worst_drop"] >= -MAX_DROP] or rows
    for r in sorted(ok, key=lambda r: -r["dev"]["head"])[:3]:  # learned without the held-out sets
        mix, gate = learn_mix_gate(train, r["features"], r["l2"], r["free"])
        rows.append(evaluate(train, r["features"], r["l2"], r["free"], mix, gate))
        show(rows[-1])
    return rows


def main() -> None:
    print(
        f"{'train':<13}{'features':<14}{'l2':>7}{'fr':>3}{'mix':>5}{'gate':>5}{'dev':>8}"
        + "".join(f"{n.removeprefix('heldout_')[:7]:>8}" for n in HELD_OUT)
        + f"{'worst':>8}"
    )
    if sys.argv[1:2] == ["--add"]:  # one training set's variants, replacing its rows in the saved results
        train = sys.argv[2]
        saved = json.loads(OUT.read_text(encoding="utf-8"))
        saved["results"] = [r for r in saved["results"] if r["train"] != train] + grid(train)
        OUT.write_text(json.dumps(saved, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")
        return
    base = evaluate("mix", "final", 1e12, 0, 0.0)  # mix 0: the prompt's own answer
    print("prompt-only  " + "".join(f"{100 * base[n]['prompt']:>8.1f}" for n in ["dev", *HELD_OUT]))
    rows = [evaluate("chnsenticorp", "mean15+final", 300.0, 0)]  # the shipped head's recipe
    show(rows[-1])
    for train in ("mix", "mix+csc", "mix+csc_all"):
        rows += grid(train)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"layers": LAYERS, "prompt_only": base, "results": rows}, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
