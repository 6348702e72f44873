"""What a reply token's sampling costs: the engine's chain (top-k first, then DRY) against llama-server's order (DRY
over the whole vocabulary, then top-k), on the same logits of real replies, in one process. And what making a reply's
DRY sampler costs: made anew (llama.cpp scans the whole vocabulary for the sequence breakers, as llama-server does
for every request) against the engine's clone of one made once (llamacpp.DrySamplers), each having seen the message.

The default model and a llama.cpp context of our own; for each of N_MESSAGES chat messages (the tuning half of
benchmarks/data/chat_messages.jsonl) a reply of up to MAX_TOKENS tokens at the chat task's settings. At every token
both chains sample the same logits, the order alternating, with the same seed: the reply goes on with the engine's
token, and the table counts how often llama-server's order drew the same one.
Run: .venv/bin/python benchmarks/sampler.py   (prints a table, writes benchmarks/results/sampler.json)
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any

# --- knobs ---------------------------------------------------------------------------------------
N_MESSAGES = 32
MAX_TOKENS = 160
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "chat_messages.jsonl"
OUT = ROOT / "benchmarks" / "results" / "sampler.json"


def llama_server_chain(ll: Any, vocab: Any, params: Any, seen: list[int]) -> Any:
    """llama-server's order for these settings: DRY over the whole vocabulary, then top-k, top-p, temperature."""
    from allinone.engines.llamacpp import dry_sampler

    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    for sampler in (
        dry_sampler(ll, vocab, params.dry_multiplier, seen),
        ll.llama_sampler_init_top_k(params.top_k),
        ll.llama_sampler_init_top_p(params.top_p, 1),
        ll.llama_sampler_init_temp(params.temperature),
        ll.llama_sampler_init_dist(params.seed),
    ):
        ll.llama_sampler_chain_add(chain, sampler)
    return chain


def main() -> None:
    import dataclasses

    import llama_cpp as ll

    from allinone.engines import GenParams
    from allinone.engines.llamacpp import _Context, _quiet, dry_sampler
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks

    _quiet(ll)
    model = ll.llama_model_load_from_file(
        str(ensure_default(Settings().models_dir)).encode(), ll.llama_model_default_params()
    )
    cparams = ll.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 2048, N_THREADS, N_THREADS
    ctx = _Context(ll, model, ll.llama_init_from_model(model, cparams), 512, None)
    chat = load_tasks()["chat"]
    g = chat.generation
    base = GenParams(
        max_tokens=MAX_TOKENS, temperature=g.temperature, top_p=g.top_p, dry_multiplier=g.dry_multiplier, seed=0
    )
    with DATA.open(encoding="utf-8") as f:
        messages = [m for m in map(json.loads, f) if m["split"] == "tune"][:N_MESSAGES]
    times: dict[str, list[float]] = {"engine": [], "llama-server order": []}
    making: dict[str, list[float]] = {"made anew": [], "cloned": []}
    ll.llama_sampler_free(ctx._dry.make(base.dry_multiplier))  # the one made once is kept
    same = tokens = 0
    for k, message in enumerate(messages):
        params = dataclasses.replace(base, seed=k)
        text = message["turns"][0]
        head = f"<|im_start|>system\n{chat.system}<|im_end|>\n<|im_start|>user\n"
        prompt = ctx.tokenize(f"{head}{text}<|im_end|>\n<|im_start|>assistant\n", special=True)
        seen = ctx.tokenize(text)  # the engine's DRY looks back over the message (and the reply)
        makers = [("made anew", functools.partial(dry_sampler, ll, ctx._vocab, params.dry_multiplier, seen)),
                  ("cloned", functools.partial(ctx._dry.make, params.dry_multiplier, seen))]  # fmt: skip
        for name, make in makers if k % 2 else makers[::-1]:
            start = time.perf_counter()
            made = make()
            making[name].append(time.perf_counter() - start)
            ll.llama_sampler_free(made)
        ours, theirs = ctx.sampler(params, seen), llama_server_chain(ll, ctx._vocab, params, seen)
        ll.llama_memory_clear(ll.llama_get_memory(ctx._ctx), True)
        ctx.decode([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        for pos in range(len(prompt), len(prompt) + MAX_TOKENS):
            order = [("engine", ours), ("llama-server order", theirs)]
            picked = {}
            for name, chain in order if pos % 2 else order[::-1]:
                start = time.perf_counter()
                picked[name] = (
                    ctx.sample(chain, -1) if chain is ours else int(ll.llama_sampler_sample(chain, ctx._ctx, -1))
                )
                times[name].append(time.perf_counter() - start)
            token = picked["engine"]
            same += picked["llama-server order"] == token
            tokens += 1
            if ctx.is_eog(token):
                break
            ctx.decode([(token, pos, 0, True)])
        ctx.free_sampler(ours)
        ll.llama_sampler_free(theirs)
    rows = {
        name: {"median_ms": statistics.median(ts) * 1e3, "mean_ms": statistics.fmean(ts) * 1e3}
        for name, ts in times.items()
    }
    dry_rows = {
        name: {"median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3} for name, ts in making.items()
    }
    results = {
        "knobs": {"n_messages": len(messages), "max_tokens": MAX_TOKENS, "n_threads": N_THREADS},
        "tokens": tokens,
        "same_token_share": same / tokens,
        "chains": rows,
        "saved_ms_per_token": rows["llama-server order"]["median_ms"] - rows["engine"]["median_ms"],
        "dry_sampler_making": dry_rows,
    }
    print(f"{tokens} reply tokens of {len(messages)} chat replies, each sampled by both chains")
    print(f"{'chain':<20} {'median ms':>10} {'mean ms':>9}")
    for name, row in rows.items():
        print(f"{name:<20} {row['median_ms']:>10.3f} {row['mean_ms']:>9.3f}")
    print(f"same token drawn: {100 * results['same_token_share']:.1f}%")
    print(f"{'a DRY sampler':<20} {'median ms':>10} {'max ms':>9}")
    for name, row in dry_rows.items():
        print(f"{name:<20} {row['median_ms']:>10.3f} {row['max_ms']:>9.3f}")
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
