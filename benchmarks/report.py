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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _json(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _rows(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


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


TABLES: dict[str, Callable[[], str]] = {
    "concurrency": concurrency,
    "load": load,
    "batching": batching,
    "engine_config": engine_config,
    "structured": structured,
    "warm_start": warm_start,
    "chat_quality": chat_quality,
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
