"""Which llama.cpp context configuration is fastest here: KV cache type, flash attention, repacked weights?

Every configuration is loaded at once (one engine each, same GGUF) and they take turns request by request, so
the load of a shared machine falls on all of them alike. Per configuration: idle sentiment latency, one
stream's decode speed, four streams' aggregate speed, and how far label probabilities scored under concurrent
load (score_batch) move from the same texts scored alone, and how far the texts scored alone move from the
reference configuration's (the one the accuracy figures were measured with). The weights are the ones `allinone
serve` loads with its defaults: the widened copy of the default GGUF, unless ALLINONE_WIDEN=off.
Run: .venv/bin/python benchmarks/engine_config.py   (writes benchmarks/results/engine_config.json)
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from allinone.engines.llamacpp import cpu_has_amx
from serving import weights

# --- knobs ---------------------------------------------------------------------------------------
CONFIGS = {  # name: LlamaCppEngine keyword arguments
    "f32 kv, no flash attn": {"kv_f16": False, "flash_attn": False, "repack": False},
    "f32 kv, flash attn": {"kv_f16": False, "flash_attn": True, "repack": False},
    "f16 kv, flash attn": {"kv_f16": True, "flash_attn": True, "repack": False},
}
# Repacked weights (use_extra_bufts) are compared only on CPUs without AMX: with AMX, llama.cpp repacks Q4_K for it,
# and the first decode then crashes the process (segmentation fault in llama-cpp-python 0.3.36's libggml-cpu).
if not cpu_has_amx():
    CONFIGS["f16 kv, flash attn, repacked"] = {"kv_f16": True, "flash_attn": True, "repack": True}
REFERENCE = "f16 kv, flash attn"  # the configuration the accuracy figures were measured with
N_SENTIMENT = 30  # ChnSentiCorp dev texts for latency
N_DRIFT = 48  # dev texts scored alone and under load
DECODE_TOKENS = 64
STREAMS = 4
ROUNDS = 3  # decode rounds per configuration, interleaved
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "engine_config.json"


def p_first(logprobs: list[float]) -> float:
    return 1 / (1 + pow(2.718281828459045, logprobs[1] - logprobs[0]))


def decode_rate(engine: Any, chat: Any, params: Any, streams: int) -> float:
    """Tokens a second of `streams` replies to `chat` generated at once, together."""
    with ThreadPoolExecutor(streams) as pool:
        t0 = time.perf_counter()
        outs = list(pool.map(lambda _: engine.generate(chat, params), range(streams)))
        wall = time.perf_counter() - t0
    return sum(o.usage.completion_tokens for o in outs if o.usage) / wall


def main() -> None:
    from allinone.classify import conversation
    from allinone.engines import Conversation, GenParams, Message, llamacpp_file
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    settings = Settings()
    source = ensure_default(settings.models_dir)
    path = llamacpp_file(source, settings)  # the file `allinone serve` loads: widened by default
    engines = {name: LlamaCppEngine(path, name="default", n_threads=N_THREADS, **kw) for name, kw in CONFIGS.items()}
    task = load_tasks()["sentiment"]
    words = [w for label in task.labels or [] for w in label.words]
    texts = [json.loads(line)["text"][:1000] for line in DATA.open(encoding="utf-8")]
    convs = [conversation(task, t) for t in texts[: max(N_SENTIMENT, N_DRIFT)]]
    chat = Conversation.of([Message("user", "Write a long story about a lighthouse keeper and his cat.")])
    params = GenParams(max_tokens=DECODE_TOKENS, temperature=0)
    for e in engines.values():  # warm: task prefix cached, first decode done
        e.score(convs[0], words)
        e.generate(chat, GenParams(max_tokens=4, temperature=0))

    latency: dict[str, list[float]] = {n: [] for n in engines}
    for conv in convs[:N_SENTIMENT]:
        for name, e in engines.items():
            t0 = time.perf_counter()
            e.score(conv, words)
            latency[name].append(time.perf_counter() - t0)

    one: dict[str, list[float]] = {n: [] for n in engines}
    many: dict[str, list[float]] = {n: [] for n in engines}
    for _ in range(ROUNDS):
        for name, e in engines.items():
            one[name].append(decode_rate(e, chat, params, 1))
            many[name].append(decode_rate(e, chat, params, STREAMS))

    def compare(ps: list[float], qs: list[float], prefix: str = "") -> dict[str, float]:
        diffs = [abs(a - b) for a, b in zip(ps, qs, strict=True)]
        agree = sum((a > 0.5) == (b > 0.5) for a, b in zip(ps, qs, strict=True)) / len(ps)
        return {
            f"{prefix}max_abs_dp": max(diffs),
            f"{prefix}mean_abs_dp": statistics.mean(diffs),
            f"{prefix}label_agreement": agree,
        }

    drift: dict[str, dict[str, float]] = {}
    alone: dict[str, list[float]] = {}
    for name, e in engines.items():
        alone[name] = [p_first(e.score(c, words).logprobs) for c in convs[:N_DRIFT]]
        loaded = [p_first(s.logprobs) for s in e.score_batch(convs[:N_DRIFT], words)]
        drift[name] = compare(alone[name], loaded)
    for name in engines:  # the same texts alone, against the reference configuration alone
        drift[name] |= compare(alone[REFERENCE], alone[name], "vs_reference_")

    rows = []
    for name in engines:
        rows.append(
            {
                "config": name,
                **CONFIGS[name],
                "sentiment_p50_s": statistics.median(latency[name]),
                "decode_tok_s": max(one[name]),
                f"aggregate_{STREAMS}_streams_tok_s": max(many[name]),
                **drift[name],
            }
        )
    print(
        f"| config | sentiment p50 | 1 stream tok/s | {STREAMS} streams tok/s | max |dp| alone vs loaded | agree "
        f"| max |dp| vs {REFERENCE} | agree |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['config']} | {r['sentiment_p50_s']:.3f} s | {r['decode_tok_s']:.1f} | "
            f"{r[f'aggregate_{STREAMS}_streams_tok_s']:.1f} | {r['max_abs_dp']:.3f} | {r['label_agreement']:.1%} "
            f"| {r['vs_reference_max_abs_dp']:.3f} | {r['vs_reference_label_agreement']:.1%} |"
        )
    knobs = {"n_sentiment": N_SENTIMENT, "n_drift": N_DRIFT, "decode_tokens": DECODE_TOKENS, "rounds": ROUNDS}
    knobs["reference"] = REFERENCE
    knobs["cpu_has_amx"] = cpu_has_amx()
    knobs["weights"] = weights(path, source)
    OUT.write_text(json.dumps({"knobs": knobs, "rows": rows}, indent=2) + "\n")
    for e in engines.values():
        e.close()


if __name__ == "__main__":
    main()
