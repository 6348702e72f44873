"""The README's tables, made from `benchmarks/results/*.json`, so that every figure in them is a measured one.

Each table sits in the README between `<!-- table: NAME -->` and `<!-- /table -->`.
`python benchmarks/report.py` rewrites them from the JSON files; `tests/test_readme.py` fails when the README
holds anything else (a figure edited by hand, a JSON file rerun without updating the README).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
HEAD = ROOT / "src" / "allinone" / "tasks" / "builtin" / "sentiment.head.json"
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _json(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _pct(x: float, places: int = 1) -> str:
    """x as a percentage, a half rounded up as written (0.8825 -> 88.3%; format() gives 88.2% from the binary)."""
    return f"{(Decimal(repr(x)) * 100).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)}%"


def _rows(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


# --- tables --------------------------------------------------------------------------------------


def concurrency() -> str:
    res = _json("concurrency")
    o, p, s = res["ours"], res["peer"], res["scaleout"]
    rows = [
        ("sentiment p50, idle", "sentiment_p50_idle_s", "{:.2f} s", "≤ llama-server"),
        ("one chat stream, decode", "one_stream_decode_tok_s", "{:.1f} tok/s", "≥ 0.95 × llama-server"),
        ("four chat streams at once, aggregate", "four_streams_aggregate_tok_s", "{:.1f} tok/s", "≥ llama-server"),
        ("time to first token, four streams, p50", "four_streams_ttft_p50_s", "{:.2f} s", "≤ 0.5 s"),
        ("time to first token, four streams, max", "four_streams_ttft_max_s", "{:.2f} s", ""),
        ("three sentiment requests 1 s into four streams, slowest", "three_sentiments_under_four_streams_slowest_s",
         "{:.2f} s", "≤ 1.0 s"),
    ]  # fmt: skip
    out = [[label, fmt.format(o[key]), fmt.format(p[key]), f"{o[key] / p[key]:.2f}", target] for label, key, fmt, target
           in rows]  # fmt: skip
    agg = p["four_streams_aggregate_tok_s"]
    out.append(
        [
            "scale-out: `serve --engine openai` in front of llama-server, four streams, aggregate",
            f"{s['four_streams_aggregate_tok_s']:.1f} tok/s",
            f"{agg:.1f} tok/s",
            f"{s['four_streams_aggregate_tok_s'] / agg:.2f}",
            "≥ 0.90 × llama-server",
        ]
    )
    return _rows(["", "allinone serve", "llama-server", "ratio", "target"], ["---", "---:", "---:", "---:", "---"], out)


def load() -> str:
    res = _json("load")
    rows = [[r["kind"], str(r["answered"]), f"{r['per_s']:.2f}", f"{r['p50_s']:.1f} s", f"{r['p99_s']:.1f} s"]
            for r in res["latency"]]  # fmt: skip
    return _rows(["", "answered", "per s", "p50", "p99"], ["---", "---:", "---:", "---:", "---:"], rows)


def batching() -> str:
    res = _json("batching")
    rows = []
    for name, r in res["paths"].items():
        rate = f"{r['texts_per_s']:.2f}" if "texts_per_s" in r else "–"
        agree = f"{r['label_agreement']:.1%}" if "label_agreement" in r else "(reference)"
        dp = f"{r['max_abs_dp']:.3f}" if "max_abs_dp" in r else "–"
        rows.append([name, rate, agree, dp])
    header = [f"scoring ({res['n_texts']} dev texts)", "texts/s", "labels as alone", "max \\|Δp\\|"]
    return _rows(header, ["---", "---:", "---:", "---:"], rows)


def engine_config() -> str:
    res = _json("engine_config")
    rows = [[r["config"], f"{r['sentiment_p50_s']:.3f} s", f"{r['decode_tok_s']:.1f}",
             f"{r['aggregate_4_streams_tok_s']:.1f}", f"{r['max_abs_dp']:.3f}"] for r in res["rows"]]  # fmt: skip
    header = ["llama.cpp context", "sentiment p50", "1 stream tok/s", "4 streams tok/s", "max \\|Δp\\| under load"]
    return _rows(header, ["---", "---:", "---:", "---:", "---:"], rows)


def structured() -> str:
    res = _json("structured")
    rows = [[name, f"{r['free_tok_s']:.1f}", f"{r['constrained_tok_s']:.1f}", f"{r['ratio']:.2f}",
             f"{r['valid_json']:.0%}"] for name, r in res["rows"].items()]  # fmt: skip
    header = ["request", "free decoding, tok/s", "with the schema, tok/s", "ratio", "valid JSON"]
    return _rows(header, ["---", "---:", "---:", "---:", "---:"], rows)


def warm_start() -> str:
    res = _json("warm_start")
    rows = [[kind, f"{r['first_s']:.3f} s", f"{r['later_p50_s']:.3f} s"] for kind, r in res["rows"].items()]
    return _rows(["request", "first after ready", f"next {res['later']}, p50"], ["---", "---:", "---:"], rows)


def chat_quality() -> str:
    before, now = _json("chat_quality_before"), _json("chat_quality_current")
    checks = ["language", "boilerplate", "code", "complete", "length", "tag", "repetition", "role", "all"]
    rows = []
    for split, name in (("tune", "tuning half"), ("held", "held-out half")):
        for label, res in (("before", before), ("now", now)):
            s = res["summary"][f"{split}/all"]
            rows.append([f"{name}, {label}", str(s["n"]), *(f"{s[c]:.1%}" for c in checks)])
    header = ["replies (48 messages × 2 seeds)", "n", *checks[:-1], "**every check**"]
    return _rows(header, ["---", "---:", *["---:"] * len(checks)], rows)


def tasks() -> str:
    res = _json("tasks")
    rows = [[t["task"], f"{t['p50_s']:.2f} s", f"{t['max_s']:.2f} s",
             f"{t['prompt_tokens']:.0f} ({t['cached_tokens']})", f"{t['completion_tokens']:.0f}",
             "–" if t["tokens_per_s"] is None else f"{t['tokens_per_s']:.1f}"] for t in res["tasks"]]  # fmt: skip
    header = ["task", "p50 latency", "max", "prompt tokens (cached)", "output tokens", "output tokens/s"]
    return _rows(header, ["---", "---:", "---:", "---:", "---:", "---:"], rows)


# Published figures the measured ones are compared with; nothing here reproduces them.
PUBLISHED = [
    ["claimed prompted Qwen1.5-0.5B (unreproducible)", "-", "89.3%", "-"],
    ["fine-tuned BERT-base (ymcui/Chinese-BERT-wwm)", "-", "95.0%", "-"],
]


def accuracy() -> str:
    r = _json("accuracy")
    dev, test = r["dev"], r["test"]
    rate = f"{test['texts_per_s']:.1f}"  # both answers come from the test run's one pass
    rows = [
        ["this project, prompt-only", _pct(dev["prompt_only"]), _pct(test["prompt_only"]), rate],
        ["this project, prompt + learned head (`ALLINONE_USE_HEADS=1`)", _pct(dev["with_head"]),
         f"**{_pct(test['with_head'])}**", rate],
    ]  # fmt: skip
    return _rows(["system", "ChnSentiCorp dev", "ChnSentiCorp test", "texts/s"], ["---"] * 4, rows + PUBLISHED)


def accuracy_domains() -> str:
    domains = _json("accuracy")["domains"]
    rows = [[f"{name} ({d['n']})", _pct(d["prompt_only"]), _pct(d["with_head"])] for name, d in domains.items()]
    header = [f"other domains ({sum(d['n'] for d in domains.values())} texts written for the tests)"]
    return _rows([*header, "prompt-only", "with head"], ["---"] * 3, rows)


def _features(key: str) -> str:
    """head_features.py's name of a feature set as the README says it: mean15+final, final, ..."""
    if key == "final":
        return "final hidden state (answer position)"
    names = {"final": "final hidden state"}
    return " + ".join(names.get(k, f"mean after layer {k.removeprefix('mean')}") for k in key.split("+"))


def _shipped_head() -> tuple[str, float]:
    """The features and L2 penalty of the head the sentiment task ships (head.py: the probe layer's mean + final)."""
    info = json.loads(HEAD.read_text(encoding="utf-8"))["info"]
    return f"mean{info['probe_layer']}+final", info["l2"]


def head_features() -> str:
    results = _json("head_features")["results"]
    penalties = sorted({r["l2"] for r in results})
    chosen = _shipped_head()
    rows = []
    for key in dict.fromkeys(r["features"] for r in results):  # in the order the script ran them
        dev = {r["l2"]: r["dev"] for r in results if r["features"] == key}
        cells = [f"**{_pct(dev[l2])}**" if (key, l2) == chosen else _pct(dev[l2]) for l2 in penalties]
        rows.append([_features(key) + (" (chosen)" if key == chosen[0] else ""), *cells])
    header = ["features (each + label scores)", *(f"L2 {l2:.0f}" for l2 in penalties)]
    return _rows(header, ["---"] * (1 + len(penalties)), rows)


def core() -> str:
    r = _json("core")
    rows = [
        [f"sentiment latency p50 / p95 ({r['sentiment_texts']} ChnSentiCorp dev texts, "
         f"~{r['sentiment_mean_new_tokens']:.0f} new tokens each)",
         f"{r['sentiment_p50_s']:.3f} s / {r['sentiment_p95_s']:.3f} s", "p50 ≤ 0.45 s"],
        ["sentiment throughput", f"{r['sentiment_texts_per_s']:.2f} texts/s", ""],
        ["chat decode speed", f"{r['chat_tokens_per_s']:.1f} tokens/s", "≥ 25"],
        ["chat first token (cached prefix)", f"{r['chat_first_token_s']:.3f} s", ""],
        ["cold start, process start to first sentiment result (model file already assembled)",
         f"{r['cold_start_s']:.2f} s (import + load {r['import_and_load_s']:.2f} s)", "≤ 3 s"],
        ["peak RSS", f"{r['peak_rss_mb']:.0f} MB", "≤ 1200 MB"],
    ]  # fmt: skip
    return _rows(["metric", "measured", "target"], ["---"] * 3, rows)


def engines() -> str:
    res = _json("engines")["engines"]
    llama, hf = res["llamacpp"], res["transformers"]
    rows = [
        ["llama.cpp", "GGUF Q4_K_M", llama],
        ["transformers (the original stack)", f"the same GGUF dequantized to {hf['details']['dtype']}", hf],
    ]
    out = [[name, weights, f"{r['p50_s']:.3f} s", f"{r['load_s']:.1f} s", f"{r['peak_rss_mb']:.0f} MB"]
           for name, weights, r in rows]  # fmt: skip
    header = ["engine", "weights", "sentiment p50", "load", "peak RSS"]
    return _rows(header, ["---", "---", "---:", "---:", "---:"], out)


TABLES: dict[str, Callable[[], str]] = {
    "concurrency": concurrency,
    "load": load,
    "batching": batching,
    "engine_config": engine_config,
    "structured": structured,
    "warm_start": warm_start,
    "chat_quality": chat_quality,
    "tasks": tasks,
    "accuracy": accuracy,
    "accuracy_domains": accuracy_domains,
    "head_features": head_features,
    "core": core,
    "engines": engines,
}


def rewrite(text: str) -> str:
    """The README text with every table block made anew from its JSON file."""
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group("name")]() + m.group(4), text)


def main() -> None:
    text = README.read_text(encoding="utf-8")
    unknown = {m.group("name") for m in BLOCK.finditer(text)} - set(TABLES)
    if unknown:
        sys.exit(f"README names tables with no formatter: {sorted(unknown)}")
    README.write_text(rewrite(text), encoding="utf-8")


if __name__ == "__main__":
    main()
