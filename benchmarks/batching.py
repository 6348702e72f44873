"""How much do a text's label probabilities move when it is scored together with other requests, and is scoring
many texts at once (bulk `eval` / `classify --batch-size K`) faster than one after another?

Continuous batching decodes the work of every running request in one llama.cpp batch, so a text's logits can
differ in the last bits from the same text scored alone (the batch shape changes the matmuls' rounding). This
scores N ChnSentiCorp dev texts (1) alone, one after another, (2) under load: each while four chat replies
stream on the same engine, and (3) K at a time with `score_batch`; it reports label agreement with (1) and the
largest |Δp|, and texts/s for (1) and (3). The engine is the one `allinone serve` loads with its defaults (the widened
copy of the default GGUF, unless ALLINONE_WIDEN=off).
Run: .venv/bin/python benchmarks/batching.py   (writes benchmarks/results/batching.json)
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from pathlib import Path

from serving import engine_weights

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 200  # ChnSentiCorp dev texts, in file order
BATCH_SIZES = [4, 8, 16]
STREAMS = 4  # chat replies streaming during the "under load" pass
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "batching.json"


def p_first(logprobs: list[float]) -> float:
    return 1 / (1 + math.exp(logprobs[1] - logprobs[0]))


def compare(alone: list[float], other: list[float]) -> dict[str, float]:
    diffs = [abs(a - b) for a, b in zip(alone, other, strict=True)]
    agree = statistics.mean((a > 0.5) == (b > 0.5) for a, b in zip(alone, other, strict=True))
    return {"label_agreement": agree, "max_abs_dp": max(diffs), "mean_abs_dp": statistics.mean(diffs)}


def main() -> None:
    from allinone.classify import conversation
    from allinone.engines import Conversation, GenParams, Message, load_engine
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    settings = Settings(n_threads=N_THREADS)
    engine = load_engine(settings)
    task = load_tasks()["sentiment"]
    words = [w for label in task.labels or [] for w in label.words]
    texts = [json.loads(line)["text"][:1000] for line in DATA.open(encoding="utf-8")][:N_TEXTS]
    convs = [conversation(task, t) for t in texts]
    engine.score(convs[0], words)  # the task prefix, cached

    t0 = time.perf_counter()
    alone = [p_first(engine.score(c, words).logprobs) for c in convs]
    rows: dict[str, dict[str, float]] = {"alone": {"texts_per_s": N_TEXTS / (time.perf_counter() - t0)}}

    stop = threading.Event()
    story = Conversation.of([Message("user", "Write a very long story about a lighthouse keeper.")])

    def stream() -> None:
        while not stop.is_set():
            for _ in engine.stream(story, GenParams(max_tokens=400, temperature=0.8)):
                if stop.is_set():
                    break

    streams = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for s in streams:
        s.start()
    time.sleep(1.0)
    loaded = [p_first(engine.score(c, words).logprobs) for c in convs]
    stop.set()
    for s in streams:
        s.join()
    rows[f"under load ({STREAMS} streams)"] = compare(alone, loaded)

    for k in BATCH_SIZES:
        t0 = time.perf_counter()
        probs = [p_first(s.logprobs) for i in range(0, N_TEXTS, k) for s in engine.score_batch(convs[i : i + k], words)]
        rows[f"score_batch K={k}"] = {"texts_per_s": N_TEXTS / (time.perf_counter() - t0), **compare(alone, probs)}

    print(f"| path ({N_TEXTS} dev texts) | texts/s | labels as alone | max \\|Δp\\| | mean \\|Δp\\| |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        rate = f"{r['texts_per_s']:.2f}" if "texts_per_s" in r else "–"
        agree = f"{r['label_agreement']:.1%}" if "label_agreement" in r else "100%"
        print(f"| {name} | {rate} | {agree} | {r.get('max_abs_dp', 0):.3f} | {r.get('mean_abs_dp', 0):.4f} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    knobs = {"n_texts": N_TEXTS, "n_threads": N_THREADS, "streams": STREAMS, "parallel": engine.slots.generate}
    knobs["weights"] = engine_weights(engine, settings)
    OUT.write_text(json.dumps({**knobs, "paths": rows}, indent=2) + "\n")
    engine.close()


if __name__ == "__main__":
    main()
