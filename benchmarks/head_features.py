"""Choose the sentiment head's features and L2 penalty on train/dev (never test).

For N_TRAIN ChnSentiCorp train texts (those not in dev or test, in file order), all of dev and the 48
other-domain texts, one scoring pass each records: the label scores, the final hidden state at the answer
position, and the mean over the text's tokens of the hidden state after each layer in LAYERS (read with
llama.cpp's eval callback, like `LlamaCppEngine(probe_layer=L)` but several layers at once). Features are
cached in CACHE_DIR (an hour on 2 cores); then logistic-regression heads (allinone.head.train_head) are
trained on train for each feature set and penalty, and scored on dev and the other domains.
Run: .venv/bin/python benchmarks/head_features.py   (table + benchmarks/results/head_features.json)
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# --- knobs ---------------------------------------------------------------------------------------
N_TRAIN = 4000
LAYERS = [6, 9, 12, 15, 18, 21]
FEATURES = ["final", "mean12", "mean15", "mean18", "mean15+final"]  # each plus the label scores
L2S = [100.0, 300.0, 1000.0]
CACHE_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/allinone-head-features")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOMAINS = ROOT / "tests" / "data" / "sentiment_domains.jsonl"
OUT = ROOT / "benchmarks" / "results" / "head_features.json"


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def extract(rows: list[dict[str, str]], out: Path) -> None:
    """Features of every row into `out` (.npz), saved every 100 rows."""
    import llama_cpp as ll

    from allinone.classify import label_scores
    from allinone.service import TaskService
    from allinone.settings import Settings

    lib = ctypes.CDLL(str(Path(ll.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_name.restype, lib.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    lib.ggml_nelements.restype, lib.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    want = {f"l_out-{layer}".encode(): layer for layer in LAYERS}
    captured: dict[int, list[Any]] = {layer: [] for layer in LAYERS}
    on = [False]

    def callback(tensor: int, ask: bool, _user: int) -> bool:
        if not on[0]:
            return not ask
        name = lib.ggml_get_name(tensor)
        if ask:
            return name in want
        n = lib.ggml_nelements(tensor)
        data = np.empty(n, dtype=np.float32)
        lib.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, n * 4)
        captured[want[name]].append(data.reshape(-1, 896))
        return True

    cb = ll.ggml_backend_sched_eval_callback(callback)
    service = TaskService(Settings())
    task, engine = service.task("sentiment"), service.engine
    cparams = ll.llama_context_default_params()  # the engine's context again, with the callback
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = 8192, 512, 512, 1
    cparams.type_k = cparams.type_v = 0
    cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cparams.n_threads = cparams.n_threads_batch = service.settings.n_threads
    cparams.cb_eval = cb
    ll.llama_free(engine._ctx)  # type: ignore[attr-defined]
    engine._ctx = ll.llama_init_from_model(engine._model, cparams)  # type: ignore[attr-defined]
    engine._mem = ll.llama_get_memory(engine._ctx)  # type: ignore[attr-defined]
    fixed = task.fixed_messages()
    words = [w for label in task.labels or [] for w in label.words]
    engine.score(engine.render([*fixed, task.user_message("预热")], len(fixed)), words)  # the prefix, uncaptured
    final, means, scores, golds = [], [], [], []
    start = time.perf_counter()
    for i, row in enumerate(rows):
        text = task.truncation.apply(row["text"])[0]
        for layer in LAYERS:
            captured[layer].clear()
        on[0] = True
        try:
            s = engine.score(engine.render([*fixed, task.user_message(text)], len(fixed)), words, hidden=True)
        finally:
            on[0] = False
        final.append(s.hidden)
        means.append(np.concatenate([np.concatenate(captured[layer]).mean(0) for layer in LAYERS]))
        scores.append(label_scores(task, s.logprobs))
        golds.append(row["label"])
        if (i + 1) % 100 == 0 or i + 1 == len(rows):
            arrays = {
                "last": np.array(final),
                "mids": np.array(means),
                "scores": np.array(scores),
                "y": np.array(golds),
            }
            np.savez(out, **arrays)  # type: ignore[arg-type]
            print(f"{out.name}: {i + 1}/{len(rows)} ({(i + 1) / (time.perf_counter() - start):.2f}/s)", flush=True)


def features(path: Path, which: str) -> tuple[np.ndarray[Any, Any], list[str]]:
    d = dict(np.load(path))
    n = len(d["y"])
    mids = d["mids"].reshape(n, len(LAYERS), -1)
    parts = [
        mids[:, LAYERS.index(int(p.removeprefix("mean")))] if p != "final" else d["last"] for p in which.split("+")
    ]
    return np.hstack([*parts, d["scores"]]), [str(y) for y in d["y"]]


def main() -> None:
    from allinone.head import train_head

    held = {r["text"] for split in ("dev", "test") for r in load(DATA / f"chnsenticorp_{split}.jsonl")}
    sets = {
        "train": [r for r in load(DATA / "chnsenticorp_train.jsonl") if r["text"] not in held][:N_TRAIN],
        "dev": load(DATA / "chnsenticorp_dev.jsonl"),
        "domains": load(DOMAINS),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        path = CACHE_DIR / f"{name}.npz"
        if not path.exists() or len(np.load(path)["y"]) < len(rows):
            extract(rows, path)
    _, dev_gold = features(CACHE_DIR / "dev.npz", "final")
    dev_scores = np.load(CACHE_DIR / "dev.npz")["scores"]
    prompt_only = float(np.mean([(a > b) == (g == "positive") for (a, b), g in zip(dev_scores, dev_gold, strict=True)]))
    print(f"dev, prompt-only: {prompt_only:.4f}\n")
    print(f"{'features (+ label scores)':<26}{'l2':>7}{'train':>8}{'dev':>8}{'domains':>9}")
    results = []
    for which in FEATURES:
        x_train, y_train = features(CACHE_DIR / "train.npz", which)
        for l2 in L2S:
            head = train_head(x_train.tolist(), y_train, ["positive", "negative"], l2=l2)
            acc = {}
            for split in ("dev", "domains"):
                x, gold = features(CACHE_DIR / f"{split}.npz", which)
                pred = [max(p := head.probabilities(r[:-2].tolist(), r[-2:].tolist()), key=p.__getitem__) for r in x]
                acc[split] = float(np.mean([a == b for a, b in zip(pred, gold, strict=True)]))
            results.append({"features": which, "l2": l2, "train": head.info["train_accuracy"], **acc})
            print(f"{which:<26}{l2:>7g}{head.info['train_accuracy']:>8.4f}{acc['dev']:>8.4f}{acc['domains']:>9.4f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    summary = {"n_train": N_TRAIN, "layers": LAYERS, "dev_prompt_only": prompt_only, "results": results}
    OUT.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
