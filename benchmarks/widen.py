"""Is the widened copy of the default model (widen.py: its Q5_0 weights stored as Q8_0, the same values) faster?

Two engines in one process, the GGUF as it is and the widened copy, taking turns request by request so that the
load of a shared machine falls on both alike: sentiment requests one at a time (each text on both, the order
alternating; the paired ratio of their latencies), one stream's and four streams' decode (64 greedy tokens, rounds
alternating), and how far the label probabilities of the sentiment texts moved.
Run: .venv/bin/python benchmarks/widen.py   (writes benchmarks/results/widen.json)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from batching import p_first
from engine_config import decode_rate

# --- knobs ---------------------------------------------------------------------------------------
N_TEXTS = 60  # ChnSentiCorp dev texts from FIRST_TEXT (the other benchmarks' latency texts are the first 30)
FIRST_TEXT = 100
ROUNDS = 8  # decode rounds per engine, alternating
DECODE_TOKENS = 64
STREAMS = 4
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "widen.json"


def main() -> None:
    from allinone.classify import conversation
    from allinone.engines import Conversation, GenParams, Message
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings
    from allinone.tasks import load_tasks
    from allinone.widen import widened

    settings = Settings()
    path = ensure_default(settings.models_dir)
    t0 = time.perf_counter()
    wide = widened(path, settings.home / "widened")
    made_s = time.perf_counter() - t0  # 0 when the copy was already there
    engines = {
        name: LlamaCppEngine(p, name="default", n_threads=N_THREADS) for name, p in (("as is", path), ("widened", wide))
    }
    task = load_tasks()["sentiment"]
    words = [w for label in task.labels or [] for w in label.words]
    with DATA.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"][:1000] for line in f][FIRST_TEXT : FIRST_TEXT + N_TEXTS]
    convs = [conversation(task, t) for t in texts]
    chat = Conversation.of([Message("user", "Write a long story about a lighthouse keeper and his cat.")])
    params = GenParams(max_tokens=DECODE_TOKENS, temperature=0)
    for e in engines.values():  # warm: task prefix cached, first decode done
        e.score(convs[0], words)
        e.generate(chat, GenParams(max_tokens=4, temperature=0))
    names = list(engines)

    latency: dict[str, list[float]] = {n: [] for n in names}
    probs: dict[str, list[float]] = {n: [] for n in names}
    for i, conv in enumerate(convs):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            scores = engines[name].score(conv, words)
            latency[name].append(time.perf_counter() - start)
            probs[name].append(p_first(scores.logprobs))

    one: dict[str, list[float]] = {n: [] for n in names}
    many: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        for name in names if r % 2 == 0 else names[::-1]:
            one[name].append(decode_rate(engines[name], chat, params, 1))
            many[name].append(decode_rate(engines[name], chat, params, STREAMS))
    for e in engines.values():
        e.close()

    med = statistics.median
    base, new = names
    diffs = [abs(a - b) for a, b in zip(probs[base], probs[new], strict=True)]
    res = {
        "knobs": {"n_texts": N_TEXTS, "first_text": FIRST_TEXT, "rounds": ROUNDS, "decode_tokens": DECODE_TOKENS},
        "size_bytes": {base: path.stat().st_size, new: wide.stat().st_size},
        "made_s": made_s,
        "rows": [
            {
                "weights": n,
                "sentiment_p50_s": med(latency[n]),
                "sentiment_paired_ratio": med(a / b for a, b in zip(latency[n], latency[base], strict=True)),
                "one_stream_tok_s": med(one[n]),
                "four_streams_tok_s": med(many[n]),
            }
            for n in names
        ],
        "max_abs_dp": max(diffs),
        "label_agreement": statistics.mean(
            (a > 0.5) == (b > 0.5) for a, b in zip(probs[base], probs[new], strict=True)
        ),
    }
    print("| weights | sentiment p50 | paired ratio | 1 stream tok/s | 4 streams tok/s |")
    print("|---|---:|---:|---:|---:|")
    for row in res["rows"]:
        print(
            f"| {row['weights']} | {row['sentiment_p50_s']:.3f} s | {row['sentiment_paired_ratio']:.3f} | "
            f"{row['one_stream_tok_s']:.1f} | {row['four_streams_tok_s']:.1f} |"
        )
    print(f"label probabilities: max |dp| {res['max_abs_dp']:.4f}, labels agree on {res['label_agreement']:.1%}")
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
