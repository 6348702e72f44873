"""Hidden-state features of the sentiment task's scoring pass, for choosing and training its learned head.

For every text of the training mix, ChnSentiCorp dev and the held-out sets (benchmarks/sentiment_data.py;
never ChnSentiCorp test), one scoring pass through the engine's own code (`engine.score(..., hidden=True)`
on an engine probing several layers at once) records: the label log-scores, the mean over the text's own
tokens of the hidden state after each layer in LAYERS, and the final hidden state at the answer position.
Features are cached in CACHE_DIR/<set>.npz and saved every CHUNK texts, so a stopped run resumes; heavy
work runs only while SIGNAL exists (the machine is shared; it pauses otherwise).
Run: python benchmarks/head_features.py [SET ...]   (default: every set)
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# --- knobs ---------------------------------------------------------------------------------------
LAYERS = (9, 12, 15, 18, 21)  # of 24; the shipped head read 15
CHUNK = 50  # texts between saves and CPU checks
THREADS = 2  # concurrent score calls; the scheduler decodes them together
N_THREADS = 2  # llama.cpp threads
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATA = Path(os.environ.get("ALLINONE_BENCH_DATA", ROOT.parent / "data"))  # outside the clone: not redistributed
CACHE_DIR = DATA / "features"
DATA_DIR = DATA / "sentiment"  # written by benchmarks/sentiment_data.py
# On a shared machine, heavy work runs only while this file exists (unset: always).
SIGNAL = Path(os.environ["ALLINONE_CPU_SIGNAL"]) if os.environ.get("ALLINONE_CPU_SIGNAL") else None
SETS = [
    "train_chnsenticorp",
    "train_chnsenticorp_more",
    "train_chnsenticorp_rest",
    "train_weibo",
    "train_amazon",
    "dev",
    "heldout_en_movies",
    "heldout_en_restaurants",
    "heldout_zh_social",
    "heldout_zh_movies",
]


def rows_of(name: str) -> list[dict[str, str]]:
    path = SHARED / "chnsenticorp_dev.jsonl" if name == "dev" else DATA_DIR / f"{name}.jsonl"
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def wait_for_cpu() -> None:
    while SIGNAL is not None and not SIGNAL.exists():
        time.sleep(30)


def cache_dir(task: Any) -> Path:
    """Features depend on the prompt (its examples are in the prefix the text attends to): one dir per prompt."""
    import hashlib

    key = json.dumps([m.content for m in task.fixed_messages()], ensure_ascii=False)
    return CACHE_DIR / hashlib.sha256(key.encode()).hexdigest()[:12]


def load_cached(path: Path) -> dict[str, list[Any]]:
    if not path.exists():
        return {"layers": [], "final": [], "scores": [], "y": []}
    d = np.load(path)
    return {k: list(d[k]) for k in ("layers", "final", "scores", "y")}


def features_of(engine: Any, task: Any, text: str) -> tuple[np.ndarray[Any, Any], list[float], list[float]]:
    from allinone.classify import conversation, label_scores

    words = [w for label in task.labels for w in label.words]
    text = task.truncation.apply(text, engine.count_tokens)[0]
    s = engine.score(conversation(task, text), words, hidden=True)
    hidden = np.asarray(s.hidden, dtype=np.float32)
    n = len(LAYERS) * 896
    return hidden[:n], hidden[n:].tolist(), label_scores(task, s.logprobs)


def extract(engine: Any, task: Any, name: str) -> None:
    path = cache_dir(task) / f"{name}.npz"
    rows, got = rows_of(name), load_cached(path)
    start = time.perf_counter()
    done0 = len(got["y"])
    with ThreadPoolExecutor(THREADS) as pool:
        for at in range(done0, len(rows), CHUNK):
            wait_for_cpu()
            chunk = rows[at : at + CHUNK]
            for row, (layers, final, scores) in zip(
                chunk, pool.map(lambda r: features_of(engine, task, r["text"]), chunk), strict=True
            ):
                got["layers"].append(layers)
                got["final"].append(final)
                got["scores"].append(scores)
                got["y"].append(row["label"])
            np.savez(path, **{k: np.asarray(v) for k, v in got.items()})
            rate = (len(got["y"]) - done0) / (time.perf_counter() - start)
            print(f"{name}: {len(got['y'])}/{len(rows)} ({rate:.2f} texts/s)", flush=True)


def main() -> None:
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    names = sys.argv[1:] or SETS
    task = load_tasks()["sentiment"]
    cache_dir(task).mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if len(load_cached(cache_dir(task) / f"{n}.npz")["y"]) < len(rows_of(n))]
    if not todo:
        return
    wait_for_cpu()
    path = ensure_default(Settings().models_dir)
    engine = LlamaCppEngine(path, name="default", n_ctx=8192, n_threads=N_THREADS, probe_layer=LAYERS)
    try:
        for name in todo:
            extract(engine, task, name)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
