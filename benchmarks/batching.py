"""Is scoring several texts as one multi-sequence llama.cpp batch faster than one after another?

Both paths share the cached task prefix: `LlamaCppEngine.score` restores it per text; `score_batch`
copies it into K sequences of a second context's unified KV cache (no recompute) and decodes all K
texts in one llama_decode call. Besides texts/s, it reports how far batched label probabilities move
from the sequential ones (batch shape changes the last bits of the matmuls) and, for the server's
case of K requests arriving at once, the mean time until each request has its answer.
Run: .venv/bin/python benchmarks/batching.py   (writes benchmarks/results/batching.json)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 96  # ChnSentiCorp dev texts, in file order
BATCH_SIZES = [2, 4, 8]
N_THREADS = 2
ROUNDS = 2  # each path runs ROUNDS times, interleaved; the best round counts (less noise from other load)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "batching.json"


def main() -> None:
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    settings = Settings(n_threads=N_THREADS)
    engine = LlamaCppEngine(
        ensure_default(settings.models_dir), name="default", n_threads=N_THREADS, batch_size=max(BATCH_SIZES)
    )
    task = load_tasks()["sentiment"]
    words = [w for label in task.labels or [] for w in label.words]
    fixed = task.fixed_messages()
    texts = [json.loads(line)["text"][:1000] for line in DATA.open(encoding="utf-8")][:N_TEXTS]
    prompts = [engine.render([*fixed, task.user_message(t)], len(fixed)) for t in texts]
    engine.score_batch(prompts[:2], words)  # warm both contexts' prefix
    engine.score(prompts[0], words)

    def p_first(logprobs: list[float]) -> float:
        return 1 / (1 + pow(2.718281828459045, logprobs[1] - logprobs[0]))

    seq_times: list[list[float]] = []
    batch_times: dict[int, list[float]] = {k: [] for k in BATCH_SIZES}
    batch_groups: dict[int, list[list[float]]] = {k: [] for k in BATCH_SIZES}
    batch_p: dict[int, list[float]] = {}
    seq_p: list[float] = []
    for _ in range(ROUNDS):
        times, seq_p = [], []
        for p in prompts:
            t0 = time.perf_counter()
            seq_p.append(p_first(engine.score(p, words).logprobs))
            times.append(time.perf_counter() - t0)
        seq_times.append(times)
        for k in BATCH_SIZES:
            engine._batch_size = k
            groups, probs = [], []
            for start in range(0, N_TEXTS, k):
                t0 = time.perf_counter()
                probs += [p_first(s.logprobs) for s in engine.score_batch(prompts[start : start + k], words)]
                groups.append(time.perf_counter() - t0)
            batch_times[k].append(sum(groups))
            batch_groups[k].append(groups)
            batch_p[k] = probs

    best_seq = min(seq_times, key=sum)
    rows: dict[str, dict[str, float]] = {
        "sequential": {"texts_per_s": N_TEXTS / sum(best_seq), "agreement": 1.0, "max_abs_dp": 0.0}
    }
    for k in BATCH_SIZES:
        r = min(range(ROUNDS), key=lambda i: batch_times[k][i])
        groups = batch_groups[k][r]
        # k requests arriving together: sequential answers them at t1, t1+t2, ...; a batch answers all at once
        seq_wait = statistics.mean(
            statistics.mean([sum(best_seq[s : s + j + 1]) for j in range(len(best_seq[s : s + k]))])
            for s in range(0, N_TEXTS, k)
        )
        rows[f"batch k={k}"] = {
            "texts_per_s": N_TEXTS / batch_times[k][r],
            "agreement": statistics.mean((a > 0.5) == (b > 0.5) for a, b in zip(seq_p, batch_p[k], strict=True)),
            "max_abs_dp": max(abs(a - b) for a, b in zip(seq_p, batch_p[k], strict=True)),
            "mean_wait_s_batched": statistics.mean(groups),
            "mean_wait_s_sequential": seq_wait,
        }
    print(f"{'path':<14}{'texts/s':>9}{'labels = seq':>14}{'max |dp|':>10}{'wait, batch':>13}{'wait, seq':>11}")
    for name, r in rows.items():
        waits = (
            f"{r['mean_wait_s_batched']:>12.2f}s{r['mean_wait_s_sequential']:>10.2f}s"
            if "mean_wait_s_batched" in r
            else ""
        )
        print(f"{name:<14}{r['texts_per_s']:>9.2f}{r['agreement']:>14.1%}{r['max_abs_dp']:>10.3f}{waits}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"n_texts": N_TEXTS, "n_threads": N_THREADS, "rounds": ROUNDS, "paths": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
