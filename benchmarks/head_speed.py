"""What turning the learned head on costs: sentiment texts/s and chat decode speed, with and without it.

Two task services on the default model: heads off (an engine without a probe, label scoring alone) and heads on
(the default: an engine probing the head's layer, and the head applied). Sentiment is one text at a time, like
`allinone eval` and a single user, the two services taking turns text by text (which goes first alternates), so
the machine's drift falls on both alike; each configuration's rate is over all its rounds. Chat is a streamed
reply (with heads on every engine carries the probe's callback, idle while generating), alternating by round; its
rate is the best round.
Run: python benchmarks/head_speed.py   (table + benchmarks/results/head_speed.json)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from head_features import wait_for_cpu
from serving import engine_weights

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 150  # ChnSentiCorp dev texts, the first N
ROUNDS = 3
CHAT_PROMPTS = ["用三句话介绍一下长城。", "Explain in three sentences what a hash table is."]
CHAT_MAX_TOKENS = 96

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "head_speed.json"


def sentiment_seconds(routers: dict[str, Any], texts: list[str]) -> dict[str, float]:
    """Seconds each router spent on the texts, taking turns text by text."""
    spent = dict.fromkeys(routers, 0.0)
    names = list(routers)
    for i, text in enumerate(texts):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            routers[name].classify("sentiment", text)
            spent[name] += time.perf_counter() - start
    return spent


def decode_rate(router: Any) -> float:
    from allinone.chat import ChatSession
    from allinone.events import Done, TaskCall, Token

    tokens, seconds = 0, 0.0
    for i, prompt in enumerate(CHAT_PROMPTS):
        options = {"max_tokens": CHAT_MAX_TOKENS, "seed": i, "stop": []}
        first_at, last = None, None
        for event in router.run(TaskCall("chat", prompt, options=options, session=ChatSession())):
            if first_at is None and isinstance(event, Token) and event.text:
                first_at = time.perf_counter()
            last = event
        if first_at is not None and isinstance(last, Done):
            tokens += last.result.usage.completion_tokens - 1
            seconds += time.perf_counter() - first_at
    return tokens / seconds


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    texts = [json.loads(line)["text"] for line in (SHARED / "chnsenticorp_dev.jsonl").open(encoding="utf-8")]
    texts = texts[:N_TEXTS]
    wait_for_cpu()
    routers = {
        "prompt-only": TaskService(Settings(use_heads=False)),
        "with head": TaskService(Settings(use_heads=True)),
    }
    for r in routers.values():
        r.classify("sentiment", texts[0])  # load, cache the prefix
    assert routers["with head"].classify("sentiment", texts[0]).method == "prompt+head"
    runs: dict[str, dict[str, list[float]]] = {k: {"texts_per_s": [], "decode_tokens_per_s": []} for k in routers}
    for _ in range(ROUNDS):
        wait_for_cpu()
        for name, seconds in sentiment_seconds(routers, texts).items():
            runs[name]["texts_per_s"].append(len(texts) / seconds)
        for name, router in routers.items():
            wait_for_cpu()
            runs[name]["decode_tokens_per_s"].append(decode_rate(router))
            print(name, {k: round(v[-1], 2) for k, v in runs[name].items()}, flush=True)
    overall = {
        name: {
            "texts_per_s": ROUNDS * len(texts) / sum(len(texts) / x for x in r["texts_per_s"]),  # over all rounds
            "decode_tokens_per_s": max(r["decode_tokens_per_s"]),  # best round
        }
        for name, r in runs.items()
    }
    ratio = {k: overall["with head"][k] / overall["prompt-only"][k] for k in overall["prompt-only"]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    result = {"n_texts": N_TEXTS, "rounds": ROUNDS, "runs": runs, "overall": overall, "ratio": ratio}
    result["weights"] = engine_weights(routers["with head"].engine, Settings())
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print("| configuration | sentiment texts/s | chat decode tokens/s |\n|---|---:|---:|")
    for name, b in overall.items():
        print(f"| {name} | {b['texts_per_s']:.2f} | {b['decode_tokens_per_s']:.1f} |")
    print(f"| with head / prompt-only | {ratio['texts_per_s']:.3f} | {ratio['decode_tokens_per_s']:.3f} |")


if __name__ == "__main__":
    main()
