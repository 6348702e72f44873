"""Is scoring several texts as one multi-sequence llama.cpp batch faster than one after another?

Both paths share the cached task prefix: sequential restores it per text; batched copies it into K
sequences of a unified KV cache (no recompute) and decodes all K suffixes in one llama_decode call.
Run: .venv/bin/python benchmarks/batching.py   (writes benchmarks/results/batching.json)
"""

from __future__ import annotations

import ctypes
import json
import statistics
import time
from pathlib import Path

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 96  # ChnSentiCorp dev texts, in file order
BATCH_SIZES = [1, 4, 8]
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "batching.json"


def main() -> None:
    import llama_cpp as ll

    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings

    settings = Settings(n_threads=N_THREADS)
    engine = LlamaCppEngine(ensure_default(settings.models_dir), name="default", n_threads=N_THREADS)
    task = __import__("allinone.tasks", fromlist=["load_tasks"]).load_tasks()["sentiment"]
    fixed = task.fixed_messages()
    texts = [json.loads(line)["text"][:1000] for line in DATA.open(encoding="utf-8")][:N_TEXTS]
    prompts = [engine.render([*fixed, task.user_message(t)], len(fixed)) for t in texts]
    tokenized = [engine.tokenize_prompt(p) for p in prompts]
    n_prefix = tokenized[0][1]
    prefix = tokenized[0][0][:n_prefix]
    suffixes = [toks[n_prefix:] for toks, _ in tokenized]
    max_k = max(BATCH_SIZES)

    cparams = ll.llama_context_default_params()
    cparams.n_ctx = 16384
    cparams.n_batch = cparams.n_ubatch = 4096
    cparams.n_seq_max = max_k + 1  # seq 0 holds the prefix, 1..k the texts
    cparams.kv_unified = True
    cparams.type_k = cparams.type_v = 0
    cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cparams.n_threads = cparams.n_threads_batch = N_THREADS
    ctx = ll.llama_init_from_model(engine._model, cparams)
    mem = ll.llama_get_memory(ctx)
    batch = ll.llama_batch_init(4096, 0, 1)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:  # token, pos, seq, logits
        batch.n_tokens = len(items)
        for j, (tok, pos, seq, want) in enumerate(items):
            batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = tok, pos, 1, want
            batch.seq_id[j][0] = seq
        assert ll.llama_decode(ctx, batch) == 0

    ll.llama_memory_clear(mem, True)
    decode([(t, i, 0, i == len(prefix) - 1) for i, t in enumerate(prefix)])  # prefix lives in seq 0
    results = {}
    for k in BATCH_SIZES:
        times = []
        for start in range(0, N_TEXTS, k):
            group = suffixes[start : start + k]
            t0 = time.perf_counter()
            items: list[tuple[int, int, int, bool]] = []
            last_index = []
            for seq, suffix in enumerate(group, 1):  # seqs 1..k get a copy of the prefix (shared cells)
                ll.llama_memory_seq_cp(mem, 0, seq, 0, len(prefix))
                items += [(t, len(prefix) + i, seq, i == len(suffix) - 1) for i, t in enumerate(suffix)]
                last_index.append(len(items) - 1)
            decode(items)
            for j in last_index:
                assert ctypes.cast(ll.llama_get_logits_ith(ctx, j), ctypes.POINTER(ctypes.c_float))[0] is not None
            for seq in range(1, len(group) + 1):
                ll.llama_memory_seq_rm(mem, seq, -1, -1)
            times.append(time.perf_counter() - t0)
        results[k] = {"texts_per_s": N_TEXTS / sum(times), "p50_group_s": statistics.median(times)}

    t0 = time.perf_counter()
    for p in prompts:  # the engine's own path: restore prefix, decode suffix
        engine.score(p, ["正面", "负面"])
    engine_rate = N_TEXTS / (time.perf_counter() - t0)

    print(f"{'path':<26}{'texts/s':>10}")
    print(f"{'engine (sequential)':<26}{engine_rate:>10.2f}")
    for k, r in results.items():
        print(f"{f'multi-sequence batch k={k}':<26}{r['texts_per_s']:>10.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"n_texts": N_TEXTS, "engine_sequential_texts_per_s": engine_rate, "batched": results}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
