"""The README's figures, made from `benchmarks/results/*.json`, so that every figure in it is a measured one.

Tables sit in the README between `<!-- table: NAME -->` and `<!-- /table -->`; `TABLES` makes each anew.
A figure in the prose sits in a phrase: `PHRASES` gives each phrase as README text with `{}` where its figures
go, and the figures formatted from the JSON; the README holds each phrase once, wrapped where it likes.
Any other figure with a unit or a decimal point (`12.3 s`, `45 ms`, `2.7%`, `656 MB`, `0.88`) outside code must
be in `NOT_MEASURED`, with the reason it is not from a results file.

`python benchmarks/report.py` rewrites the tables and the phrases' figures from the JSON files; `tests/test_readme.py`
fails when the README holds anything else (a figure edited by hand, a JSON file rerun without updating the README,
a new figure with no source).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from accuracy import HELD_OUT as HELD_OUT_SETS  # the held-out domains, as accuracy.json names them
from allinone.replycheck import language_of
from head_choice import HELD_OUT, MAX_DROP, TRAIN  # the same domains, as head_choice.json names them

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EARLIER = RESULTS / "earlier"  # earlier/COMMIT/NAME.json: NAME.json as COMMIT left it, copied byte for byte
README = ROOT / "README.md"
HEAD = ROOT / "src" / "allinone" / "tasks" / "builtin" / "sentiment.head.json"
# the serving runs before the ones in the README, kept in earlier/: "the run before"
LOAD_ONE_QUEUE = "803127a"  # load.py, with one queue for both lanes
STREAM_GAP_BEFORE = "2a1a2a6"  # stream_gap.py, the last run before the widened weights and the DRY clones
DRY_MADE_ANEW = "253368b"  # thread_cpu.py, the last run before each reply's DRY sampler was a clone
DRY_FIRST = "03be5c9"  # thread_cpu.py, the run before the sampler took top-k before DRY
LOAD_PREVIOUS = "a75c4b2"  # load.py, the run before the one in the README
LOAD_DRY_ANEW = "0982e76"  # load.py, the one before that, before each reply's DRY sampler was a clone
MIXED_STEP_PREVIOUS = "e0b0c80"  # mixed_step.py, the run before the one in the README (the file as it is)
MIXED_STEP_BEFORE = "419f3f2"  # mixed_step.py, the run before the split step put its prompts first
PARALLEL_BEFORE = "4b958c6"  # parallel.py, the run before the one in the README
PROBE_COST_BEFORE = "2cf55b0"  # probe_cost.py, the run before the one in the README (the file as it is)
CORE_AS_IS = "9cc0260"  # core.py, the last run on the weights as the file has them
CORE_WIDENED_BEFORE = "d6b4c76"  # core.py, the run before the one in the README (widened weights too)
ENGINE_CONFIG_BEFORE = "82f3471"  # engine_config.py, the run before the one in the README (the file as it is)
ENGINE_CONFIG_FIRST = "57da775"  # engine_config.py, the first run with repacked weights
CONCURRENCY_BEFORE = "39b5d6e"  # concurrency.py, the run before the one in the README
BATCHING_AS_IS = "e46253d"  # batching.py, the last run on the weights as the file has them
CONCURRENCY_DRY_ANEW = "6edbb5d"  # concurrency.py, the last run before each reply's DRY sampler was a clone
CONCURRENCY_AS_IS = "da4fb0b"  # concurrency.py, the last run before the default loaded the widened weights
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _json(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _json_at(commit: str, name: str) -> Any:
    """A results file as an earlier commit wrote it, kept as a copy: the README compares some figures with that run."""
    return json.loads((EARLIER / commit / f"{name}.json").read_text(encoding="utf-8"))


def _jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
        ("the same three sentiment requests at once, idle, slowest", "three_sentiments_idle_slowest_s", "{:.2f} s",
         ""),
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


def _widened(res: dict[str, Any], name: str) -> None:
    """The README says this table is for the widened weights the server loads by default."""
    if res.get("weights", res.get("knobs", {}).get("weights")) != "widened":
        raise SystemExit(f"{name}.json was not measured on the widened weights, as the README says: rewrite it")


def batching() -> str:
    res = _json("batching")
    _widened(res, "batching")
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
    _widened(res, "engine_config")
    rows = [[r["config"], f"{r['sentiment_p50_s']:.3f} s", f"{r['decode_tok_s']:.1f}",
             f"{r['aggregate_4_streams_tok_s']:.1f}", f"{r['max_abs_dp']:.3f}",
             f"{r['vs_reference_max_abs_dp']:.3f}"] for r in res["rows"]]  # fmt: skip
    header = ["llama.cpp context", "sentiment p50", "1 stream tok/s", "4 streams tok/s", "max \\|Δp\\| under load",
              "max \\|Δp\\| against the default"]  # fmt: skip
    return _rows(header, ["---", "---:", "---:", "---:", "---:", "---:"], rows)


def structured() -> str:
    res = _json("structured")
    _widened(res, "structured")
    rows = [[name, f"{r['free_tok_s']:.1f}", f"{r['constrained_tok_s']:.1f}", f"{r['ratio']:.2f}",
             f"{r['valid_json']:.0%}"] for name, r in res["rows"].items()]  # fmt: skip
    header = ["request", "free decoding, tok/s", "with the schema, tok/s", "ratio", "valid JSON"]
    return _rows(header, ["---", "---:", "---:", "---:", "---:"], rows)


def warm_start() -> str:
    res = _json("warm_start")
    _widened(res, "warm_start")
    rows = [[kind, f"{r['first_s']:.3f} s", f"{r['later_p50_s']:.3f} s"] for kind, r in res["rows"].items()]
    return _rows(["request", "first after ready", f"next {res['later']}, p50"], ["---", "---:", "---:"], rows)


def chat_quality() -> str:
    runs = [("before", _json("chat_quality_before")), ("without DRY", _json("chat_quality_nodry"))]
    runs += [("DRY, temperature 0.7", _json("chat_quality_dry07")), ("DRY, temperature 0.4", _json("chat_quality_t04"))]
    runs += [("start, first English wording", _json("chat_quality_start1")), ("now", _json("chat_quality_current"))]
    checks = ["language", "boilerplate", "code", "complete", "length", "tag", "repetition", "role", "mood", "all"]
    rows = []
    for split, name in (("tune", "tuning half"), ("held", "held-out half")):
        for label, res in runs:
            s = res["summary"][f"{split}/all"]
            rows.append([f"{name}, {label}", str(s["n"]), *(f"{s[c]:.1%}" for c in checks)])
    header = ["replies (48 messages × 2 seeds)", "n", *checks[:-1], "**every check**"]
    return _rows(header, ["---", "---:", *["---:"] * len(checks)], rows)


def tasks() -> str:
    res = _json("tasks")
    _widened(res, "tasks")
    rows = [[t["task"], f"{t['p50_s']:.2f} s", f"{t['max_s']:.2f} s",
             f"{t['prompt_tokens']:.0f} ({t['cached_tokens']:.0f})", f"{t['completion_tokens']:.0f}",
             "–" if t["tokens_per_s"] is None else f"{t['tokens_per_s']:.1f}"] for t in res["tasks"]]  # fmt: skip
    header = ["task", "p50 latency", "max", "prompt tokens (cached)", "output tokens", "output tokens/s"]
    return _rows(header, ["---", "---:", "---:", "---:", "---:", "---:"], rows)


# Published figures the measured ones are compared with; nothing here reproduces them.
PUBLISHED = [
    ["claimed prompted Qwen1.5-0.5B (unreproducible)", "-", "89.3%", "-"],
    ["fine-tuned BERT-base (ymcui/Chinese-BERT-wwm)", "-", "95.0%", "-"],
]


SETS = {  # accuracy.py's sets as the README names them
    "chnsenticorp_dev": "ChnSentiCorp dev (hotel, laptop, book reviews)",
    "chnsenticorp_test": "ChnSentiCorp test",
    "en_movies": "English movie reviews (IMDB sentences)",
    "en_restaurants": "English restaurant reviews (Yelp sentences)",
    "zh_social": "Chinese social media (Weibo, held-out part)",
    "zh_movies": "Chinese movie reviews (Douban)",
    "written_for_tests": "texts written for the tests (take-out, shopping, social, English)",
}


SHORT = {"en_movies": "IMDB", "en_restaurants": "Yelp", "zh_social": "Weibo", "zh_movies": "Douban"}  # one word


def accuracy() -> str:
    r, head_speed = _json("accuracy")["results"], _json("head_speed")
    _widened(head_speed, "head_speed")
    speed = head_speed["overall"]
    dev, test = r["chnsenticorp_dev"], r["chnsenticorp_test"]
    rows = [
        ["this project, prompt + learned head (the default)", _pct(dev["with_head"]), f"**{_pct(test['with_head'])}**",
         f"{speed['with head']['texts_per_s']:.2f}"],
        ["this project, prompt-only (`--no-head`)", _pct(dev["prompt_only"]), _pct(test["prompt_only"]),
         f"{speed['prompt-only']['texts_per_s']:.2f}"],
    ]  # fmt: skip
    return _rows(["system", "ChnSentiCorp dev", "ChnSentiCorp test", "texts/s"], ["---"] * 4, rows + PUBLISHED)


def _ci(lo: float, hi: float) -> str:
    return f"{100 * lo:.1f}-{100 * hi:.1f}"


def accuracy_domains() -> str:
    rows = []
    for name, d in _json("accuracy")["results"].items():
        lo, hi = d["gain_ci"]
        rows.append([SETS[name], f"{d['n']:,}", f"{_pct(d['prompt_only'])} ({_ci(*d['prompt_only_ci'])})",
                     f"{_pct(d['with_head'])} ({_ci(*d['with_head_ci'])})",
                     f"{100 * d['gain']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})"])  # fmt: skip
    header = ["set", "texts", "prompt-only (95% CI)", "with head (95% CI)", "head − prompt, points (95% CI)"]
    return _rows(header, ["---", "---:", "---", "---", "---"], rows)


def _features(key: str) -> str:
    """head_choice.py's name of a feature set as the README says it: mean18, mean15+final, final"""
    names = {"final": "final state"}
    return " + ".join(names.get(k, f"mean after layer {k.removeprefix('mean')}") for k in key.split("+"))


TRAIN_NAMES = {"chnsenticorp": "ChnSentiCorp", "mix": "mix", "mix+csc": "mix, ChnSentiCorp ×2",
               "mix+csc_all": "mix, all ChnSentiCorp"}  # fmt: skip
HEAD_CHOICE_ROWS = 6  # the best plain heads by dev that lose no more than MAX_DROP anywhere, and the chosen one


def _chosen_head() -> dict[str, Any]:
    info = json.loads(HEAD.read_text(encoding="utf-8"))["info"]
    train = next(k for k, names in TRAIN.items() if [f"{n}.jsonl" for n in names] == info["files"])
    return {"train": train, "features": info["features"], "l2": info["l2"], "free": info["free"]}


def _choice_rows() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """head_choice.json: the prompt-only row, then the old recipe, the best safe variants, the chosen one last."""
    r = _json("head_choice")
    chosen = _chosen_head()
    plain = [x for x in r["results"] if x["mix"] == 1.0 and x["gate"] == 0.5]
    safe = sorted((x for x in plain[1:] if x["worst_drop"] >= -MAX_DROP), key=lambda x: -x["dev"]["head"])
    pick = next(x for x in plain if {k: x[k] for k in chosen} == chosen)
    rows = [plain[0], *[x for x in safe[:HEAD_CHOICE_ROWS] if x is not pick], pick]
    return r["prompt_only"], rows


def head_choice() -> str:
    base, rows = _choice_rows()
    out = [["prompt-only", "", _pct(base["dev"]["prompt"]), *(_pct(base[n]["prompt"]) for n in HELD_OUT), ""]]
    for x in rows:
        mark = " (chosen)" if x is rows[-1] else ""
        train = TRAIN_NAMES[x["train"]]
        pen = f"{x['l2']:.0f}" + (", label scores free" if x["free"] else "")
        out.append([f"{train}, {_features(x['features'])}{mark}", pen, _pct(x["dev"]["head"]),
                    *(_pct(x[n]["head"]) for n in HELD_OUT), f"{100 * x['worst_drop']:+.1f}"])  # fmt: skip
    header = ["head (features + label scores)", "L2", "dev", "en movies", "en restaurants", "zh social",
              "zh movies", "worst vs prompt"]  # fmt: skip
    return _rows(header, ["---", "---", *["---:"] * 6], out)


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


def parallel() -> str:
    res = _json("parallel")
    rows = [[str(r["parallel"]), f"{r['aggregate_tok_s']:.1f}", f"{r['ttft_p50_s']:.2f} s", f"{r['ttft_max_s']:.2f} s",
             f"{r['slowest_stream_s']:.1f} s", f"{r['sentiment_slowest_s']:.2f} s", f"{r['rss_mb_loaded']:.0f} MB"]
            for r in res["rows"]]  # fmt: skip
    header = ["`ALLINONE_PARALLEL`", "tok/s, all streams", "first token p50", "first token max", "last stream done",
              f"slowest of {res['knobs']['users']} sentiments", "RSS"]  # fmt: skip
    return _rows(header, ["---:", "---:", "---:", "---:", "---:", "---:", "---:"], rows)


def model_choice() -> str:
    res = _json("model_choice")
    rows = []
    for ref, r in res["models"].items():
        speed = [f"{r['texts_per_s']:.2f}", f"{r['decode_tokens_per_s']:.1f}", f"{r['first_token_s']:.2f} s"]
        chat = [f"{r['held_all_checks']:.1%}", f"{r['held_language']:.1%}"]
        rows.append([f"`{ref}`", f"{r['file_mb']:.0f} MB", f"{r['peak_rss_mb']} MB", f"{r['dev_accuracy']:.1%}",
                     *speed, *chat])  # fmt: skip
    header = ["`--model`", "file", "peak RSS", f"sentiment, label scoring alone, first {res['n_dev']} dev texts",
              "sentiment texts/s", "chat tokens/s", "chat first token", "chat: every check, held-out",
              "chat: language, held-out"]  # fmt: skip
    return _rows(header, ["---", *["---:"] * 8], rows)


TABLES: dict[str, Callable[[], str]] = {
    "concurrency": concurrency,
    "parallel": parallel,
    "model_choice": model_choice,
    "load": load,
    "batching": batching,
    "engine_config": engine_config,
    "structured": structured,
    "warm_start": warm_start,
    "chat_quality": chat_quality,
    "tasks": tasks,
    "accuracy": accuracy,
    "accuracy_domains": accuracy_domains,
    "head_choice": head_choice,
    "core": core,
    "engines": engines,
}


# --- figures in the prose ------------------------------------------------------------------------

FIGURE = r"[-+]?[\w.,]*\w%?"  # a figure as the README writes it: 1.83, +0.4, 31,000, 2.7%, five, e46253d
WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def loose(text: str) -> str:
    """A regex for text as the README may wrap it: a space matches any run of whitespace, a line break too."""
    return r"\s+".join(map(re.escape, text.split(" ")))


@dataclass(frozen=True)
class Phrase:
    """README text with `{}` where each figure goes, and the figures as they should read."""

    template: str
    figures: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        """The phrase with any figure in place of each `{}`."""
        return re.compile(f"({FIGURE})".join(loose(part) for part in self.template.split("{}")))


def phrase(template: str, *figures: object) -> Phrase:
    if template.count("{}") != len(figures):
        raise ValueError(f"{template!r} has {template.count('{}')} places for {len(figures)} figures")
    return Phrase(template, tuple(map(str, figures)))


def lean_install_prose() -> list[Phrase]:
    r = _json("lean_install")
    return [
        phrase("its install step took {} s with llama-cpp-python's wheel cached and left a {} MB venv of {} packages, "
               "{} MB of it the model's part packages", f"{r['make_setup_s']:.1f}", r["venv_mb"], r["packages"],
               r["model_parts_mb"]),
    ]  # fmt: skip


def routing_prose() -> list[Phrase]:
    r = _json("routing")
    held_out = sum(row["split"] == "test" for row in _jsonl(ROOT / "tests" / "data" / "routing.jsonl"))
    return [
        phrase("On the {}-input routing set", r["n"]),
        phrase("it picks the right task for {} of inputs ({} on the {} held out from tuning", _pct(r["accuracy"]),
               _pct(r["by_split"]["test"]), held_out),
    ]  # fmt: skip


def tasks_prose() -> list[Phrase]:
    return [phrase("(`benchmarks/tasks.py`, {} threads, quiet machine", _json("tasks")["n_threads"])]


def http_overhead_prose() -> list[Phrase]:
    r = _json("http_overhead")
    _widened(r, "http_overhead")
    n, over = r["config"]["n_texts"], r["overhead"]
    return [
        phrase("(`benchmarks/http_overhead.py`, {} ChnSentiCorp dev texts", n),
        phrase("direct p50 {} ms, HTTP p50 {} ms; median paired difference {} ms", f"{r['direct']['p50_ms']:.1f}",
               f"{r['http']['p50_ms']:.1f}", f"{over['median_paired_ms']:+.1f}"),
        phrase("= {} ms. Labels agree on {}/{}.", f"{over['budget_ms']:.1f}", round(r["labels_agree"] * n), n),
    ]  # fmt: skip


def _hop_sides(r: dict[str, Any], before: dict[str, Any], agg: str) -> tuple[str, str]:
    """Where our four streams came against the scale-out row (llama-server behind our HTTP layer) in two runs; the
    README's sentence holds while they are within a point of it."""
    sides = []
    for run in (r, before):
        ours, hop = run["ours"][agg] / run["peer"][agg], run["scaleout"][agg] / run["peer"][agg]
        sides.append("far" if abs(ours - hop) > 0.01 else "below" if ours < hop else "above")
    return sides[0], sides[1]


def concurrency_prose() -> list[Phrase]:
    r, earlier = _json("concurrency"), CONCURRENCY_BEFORE
    before, as_is = _json_at(earlier, "concurrency"), _json_at(CONCURRENCY_AS_IS, "concurrency")
    made_anew = _json_at(CONCURRENCY_DRY_ANEW, "concurrency")
    knobs, o, p = r["knobs"], r["ours"], r["peer"]
    peer = knobs["peer_args"]

    def ratio(run: dict[str, Any], key: str, side: str = "ours") -> str:
        return f"{run[side][key] / run['peer'][key]:.2f}"

    def busy(run: dict[str, Any]) -> str:  # the three texts under four streams, over the same three idle
        ours = run["ours"]
        return f"{ours['three_sentiments_under_four_streams_slowest_s'] / ours['three_sentiments_idle_slowest_s']:.2f}"

    agg, idle, one = "four_streams_aggregate_tok_s", "sentiment_p50_idle_s", "one_stream_decode_tok_s"
    three_busy, three_idle = "three_sentiments_under_four_streams_slowest_s", "three_sentiments_idle_slowest_s"
    rounds = [a / b for a, b in zip(o["four_streams_runs_tok_s"], p["four_streams_runs_tok_s"], strict=True)]
    off = _json("concurrency_widen_off")  # this version with ALLINONE_WIDEN=off
    off_three = f"{off['ours'][three_busy]:.2f}"
    short = float(ratio(off, agg)) < 1 and float(ratio(off, idle)) >= 1 and float(off_three) >= 1  # as printed
    if off["knobs"]["widen"] != "off" or not short:
        raise SystemExit("the run with ALLINONE_WIDEN=off no longer stands as the README says: rewrite it")
    if _hop_sides(r, before, agg) != ("below", "above"):
        raise SystemExit("our four streams against the scale-out row no longer stand as the README says: rewrite it")
    return [
        phrase("both running at once with {} threads each (`-c {} -np {}`", knobs["n_threads"],
               peer[peer.index("-c") + 1], peer[peer.index("-np") + 1]),
        phrase("medians of {} rounds ({} of one stream)", knobs["rounds"], knobs["one_stream_rounds"]),
        phrase("({} s against a target of 1.0 s; llama-server took {} s in this run and {} s in the run before;",
               f"{o[three_busy]:.2f}", f"{p[three_busy]:.1f}", f"{before['peer'][three_busy]:.1f}"),
        phrase("sent together to our idle server take {} s ({} s in the run before)", f"{o[three_idle]:.2f}",
               f"{before['ours'][three_idle]:.2f}"),
        phrase("and took {} of their idle time, against {} in the run before", busy(r), busy(before)),
        phrase("In the last run before the widened copy was the default (the results file at commit {}), the three "
               "took {} s idle and {} s beside four streams", CONCURRENCY_AS_IS, f"{as_is['ours'][three_idle]:.2f}",
               f"{as_is['ours'][three_busy]:.2f}"),
        phrase("every stream ran to its {} tokens", knobs["chat_max_tokens"]),
        phrase("Four streams together reach {} of llama-server's aggregate in this run, {} in the run before (the "
               "results file at commit {}) and {} in the last run before the widened copy was the default",
               ratio(r, agg), ratio(before, agg), earlier, ratio(as_is, agg)),
        phrase("on this version, with `ALLINONE_WIDEN=off` (`benchmarks/results/concurrency_widen_off.json`), four "
               "streams reached {} of llama-server's aggregate, idle sentiment took {} of its time, and the three "
               "sentiments beside four streams took {} s", ratio(off, agg), ratio(off, idle), off_three),
        phrase("this run's ratio lay between {} and {} (the JSON keeps every round)", f"{min(rounds):.2f}",
               f"{max(rounds):.2f}"),
        phrase("The scale-out row, which only passes requests on to llama-server ({}, {} before)",
               ratio(r, agg, "scaleout"), ratio(before, agg, "scaleout")),
        phrase("our four streams came within a point of it, below it in this run and above it in the run before"),
        phrase("Idle sentiment ({} of llama-server's time, {} before) and one stream's decode ({}, {} before)",
               ratio(r, idle), ratio(before, idle), ratio(r, one), ratio(before, one)),
        phrase("the peer's chat requests carry the DRY sampling that our chat task adds to every allinone-chat "
               "request ({} {}", "dry_multiplier", r["knobs"]["peer_sampling"]["dry_multiplier"]),
        phrase("llama-server's own four-stream aggregate was {} tokens/s in this run and {} in the run before",
               f"{p[agg]:.1f}", f"{before['peer'][agg]:.1f}"),
        phrase("This row misses its target in this run, in the run before, and in the one before that ({}, the "
               "results file at commit {})", ratio(made_anew, agg), CONCURRENCY_DRY_ANEW),
        phrase("The first token of four streams comes at {} s ({} s in the run before, and {} s in the results file at "
               "commit {}", f"{o['four_streams_ttft_p50_s']:.2f}", f"{before['ours']['four_streams_ttft_p50_s']:.2f}",
               f"{made_anew['ours']['four_streams_ttft_p50_s']:.2f}", CONCURRENCY_DRY_ANEW),
    ]  # fmt: skip


def sampler_prose() -> list[Phrase]:
    r = _json("sampler")
    chains = r["chains"]
    return [
        phrase("{} ms a reply token against {} ms in llama-server's order", f"{chains['engine']['median_ms']:.2f}",
               f"{chains['llama-server order']['median_ms']:.2f}"),
        phrase("with the same token drawn at {} of {} tokens of {} replies",
               "all" if r["same_token_share"] == 1 else _pct(r["same_token_share"]), f"{r['tokens']:,}",
               r["knobs"]["n_messages"]),
        phrase("a clone of one made once takes {} ms where making one anew takes {} ms",
               f"{r['dry_sampler_making']['cloned']['median_ms']:.2f}",
               f"{r['dry_sampler_making']['made anew']['median_ms']:.0f}"),
    ]  # fmt: skip


def kv_states_prose() -> list[Phrase]:
    r = _json("kv_states")["rows"]["2000"]
    return [
        phrase("for a conversation of 2,000 tokens, saving it and cutting off the task prefix take {} ms, joining the "
               "prefix back and restoring {} ms", f"{r['save'] + r['cut']:.1f}", f"{r['join'] + r['restore']:.1f}"),
    ]  # fmt: skip


def parallel_prose() -> list[Phrase]:
    rows = {r["parallel"]: r for r in _json("parallel")["rows"]}
    before = {r["parallel"]: r for r in _json_at(PARALLEL_BEFORE, "parallel")["rows"]}
    most = rows[max(rows)]
    extra = most["rss_mb_loaded"] - rows[min(rows)]["rss_mb_loaded"]
    sentiment = sorted(r["sentiment_slowest_s"] for r in rows.values())
    return [
        phrase("With eight users, eight sequences serve them best: every first token within {} s",
               f"{math.ceil(100 * most['ttft_max_s']) / 100:.2f}"),
        phrase("for {} MB more memory than one sequence", f"{extra:.0f}"),
        phrase("(the slowest of eight is {} to {} s with any setting", f"{sentiment[0]:.1f}", f"{sentiment[-1]:.1f}"),
        phrase("The median first token with four sequences was {} s in this run and {} s in the run before (the "
               "results file at commit {}, on the weights as the file has them)", f"{rows[4]['ttft_p50_s']:.2f}",
               f"{before[4]['ttft_p50_s']:.2f}", PARALLEL_BEFORE),
    ]  # fmt: skip


def batching_prose() -> list[Phrase]:
    n = _json("batching")["n_texts"]
    before = _json_at(BATCHING_AS_IS, "batching")["paths"]
    load, batch = before["under load (4 streams)"], before["score_batch K=4"]
    return [
        phrase("measured on {} dev texts (see Serving many users)", n),
        phrase("`benchmarks/batching.py` scores {} ChnSentiCorp dev texts alone", n),
        phrase("In the run before, on the weights as the file has them (the results file at commit {}), labels agreed "
               "on {} of texts under load and {} in batches of 4, with max |Δp| {} and {}", BATCHING_AS_IS,
               _pct(load["label_agreement"]), _pct(batch["label_agreement"]), f"{load['max_abs_dp']:.3f}",
               f"{batch['max_abs_dp']:.3f}"),
    ]  # fmt: skip


def engine_config_prose() -> list[Phrase]:
    r = _json("engine_config")
    # the context's default
    default = next(row for row in r["rows"] if row["config"] == r["knobs"]["reference"])
    plain = [row for row in r["rows"] if not row["repack"]]
    repacked = next((row for row in r["rows"] if row["repack"]), None)
    if repacked is None:  # engine_config.py measures repacking only on CPUs without AMX, where it cannot crash
        raise SystemExit(
            "engine_config.json has no repacked row (it was run on an AMX CPU): the README's sentences on repacked "
            "weights no longer come from a run; rewrite them and engine_config_prose"
        )
    four, one = "aggregate_4_streams_tok_s", "decode_tok_s"

    def pair(commit: str) -> tuple[dict[str, Any], dict[str, Any]]:  # (repacked, default) of an earlier run
        rows = _json_at(commit, "engine_config")["rows"]
        plain = next(x for x in rows if x["kv_f16"] and x["flash_attn"] and not x["repack"])
        return next(x for x in rows if x["repack"]), plain

    (b_rep, b_def), (f_rep, f_def) = pair(ENGINE_CONFIG_BEFORE), pair(ENGINE_CONFIG_FIRST)
    return [
        phrase("(`benchmarks/engine_config.py`, {} dev texts idle, {}-token decodes", r["knobs"]["n_sentiment"],
               r["knobs"]["decode_tokens"]),
        phrase("idle sentiment {} s (the fastest of the three {} s), one stream {} tokens/s (best {}), four streams {} "
               "(best {})", f"{default['sentiment_p50_s']:.3f}", f"{min(x['sentiment_p50_s'] for x in plain):.3f}",
               f"{default[one]:.1f}", f"{max(x[one] for x in plain):.1f}",
               f"{default[four]:.1f}", f"{max(x[four] for x in plain):.1f}"),
        phrase("Here they gave one stream {} tokens/s against {}, four streams {} against {}, and idle sentiment {} s "
               "against {} s", f"{repacked[one]:.1f}", f"{default[one]:.1f}", f"{repacked[four]:.1f}",
               f"{default[four]:.1f}", f"{repacked['sentiment_p50_s']:.3f}", f"{default['sentiment_p50_s']:.3f}"),
        phrase("the run before (the results file at commit {}, on the weights as the file has them) gave one stream {} "
               "against {} and four streams {} against {}, and the one before that (commit {}) four streams {} against "
               "{} and one stream {} against {}", ENGINE_CONFIG_BEFORE, f"{b_rep[one]:.1f}", f"{b_def[one]:.1f}",
               f"{b_rep[four]:.1f}", f"{b_def[four]:.1f}", ENGINE_CONFIG_FIRST, f"{f_rep[four]:.1f}",
               f"{f_def[four]:.1f}", f"{f_rep[one]:.1f}", f"{f_def[one]:.1f}"),
        phrase("moved the label probabilities of {} dev texts by up to {} from the default's, and agreed on {} of "
               "their labels", r["knobs"]["n_drift"], f"{repacked['vs_reference_max_abs_dp']:.3f}",
               _pct(repacked["vs_reference_label_agreement"])),
    ]  # fmt: skip


def widen_prose() -> list[Phrase]:
    r = _json("widen")
    plain, wide = r["rows"]
    mb = {name: f"{size / 1e6:.1f}" for name, size in r["size_bytes"].items()}
    return [
        phrase("made once in the home dir ({} MB against {} MB)", mb[wide["weights"]], mb[plain["weights"]]),
        phrase("taking turns; {} dev texts, {} rounds of {}-token decodes)", r["knobs"]["n_texts"],
               r["knobs"]["rounds"], r["knobs"]["decode_tokens"]),
        phrase("measured sentiment p50 {} s against {} s (paired ratio {}), one stream {} tokens/s against {}, and "
               "four streams {} against {}", f"{wide['sentiment_p50_s']:.3f}", f"{plain['sentiment_p50_s']:.3f}",
               f"{wide['sentiment_paired_ratio']:.3f}", f"{wide['one_stream_tok_s']:.1f}",
               f"{plain['one_stream_tok_s']:.1f}", f"{wide['four_streams_tok_s']:.1f}",
               f"{plain['four_streams_tok_s']:.1f}"),
        phrase("the label probabilities did not move (max |Δp| {})", f"{r['max_abs_dp']:.4f}"),
        phrase("(`benchmarks/widen.py`: one stream {} of its decode speed, four streams {})",
               f"{wide['one_stream_tok_s'] / plain['one_stream_tok_s']:.2f}",
               f"{wide['four_streams_tok_s'] / plain['four_streams_tok_s']:.2f}"),
    ]  # fmt: skip


def load_prose() -> list[Phrase]:
    r, before = _json("load"), "2e98757"  # the last run before continuous batching
    lat = {row["kind"]: row for row in r["latency"]}
    earlier = {row["kind"]: row for row in _json_at(before, "load")["latency"]}
    one_queue_run, previous = _json_at(LOAD_ONE_QUEUE, "load"), _json_at(LOAD_PREVIOUS, "load")
    prev = {row["kind"]: row for row in previous["latency"]}
    dry_anew_run = _json_at(LOAD_DRY_ANEW, "load")
    dry_anew = {row["kind"]: row for row in dry_anew_run["latency"]}
    one_queue = {row["kind"]: row for row in one_queue_run["latency"]}
    one_queue_refused, refused = one_queue_run["by_status"].get("429", 0), r["by_status"].get("429", 0)
    growth = r["rss_mb_end"] / r["rss_mb_start"] - 1  # from the RSS figures: rss_growth is rounded to 4 places
    return [
        phrase("(`benchmarks/load.py`: {} clients", r["clients"]),
        phrase("half {}-token chat turns", r["chat_max_tokens"]),
        phrase("after a {} s warm-up; {} threads, a {} MB KV-state cache", f"{r['warmup_s']:.0f}", r["n_threads"],
               r["cache_mb"]),
        phrase("{} answered requests a second, against {} before continuous batching", f"{lat['all']['per_s']:.2f}",
               f"{earlier['all']['per_s']:.2f}"),
        phrase("the last run with one queue for both lanes (the results file at commit {}) gave {}", LOAD_ONE_QUEUE,
               f"{one_queue['all']['per_s']:.2f}"),
        phrase("its {} refusals (429) could fall on either kind, one queue serving both lanes; of this run's {}, "
               "{} were chat turns and {} sentiment requests)", one_queue_refused, refused,
               r["by_kind_status"]["chat"].get("429", 0), r["by_kind_status"]["sentiment"].get("429", 0)),
        phrase("sentiment p50 {} s. The model computed for {} of the measured run's wall time",
               f"{lat['sentiment']['p50_s']:.1f}", _pct(r["model_busy_share"], 0)),
        phrase("once the clients stop (all {} texts the clients draw from and {} chat turns, {} at a time), a "
               "sentiment request costs {} s of model compute and a chat turn {} s", r["cost_requests"]["sentiment"],
               r["cost_requests"]["chat"], r["cost_concurrency"],
               f"{r['model_s_per_request']['sentiment']:.2f}", f"{r['model_s_per_request']['chat']:.2f}"),
        phrase("caps this run's mix of answers ({} sentiment, {} chat) at {} a second with the model never idle",
               lat["sentiment"]["answered"], lat["chat"]["answered"], f"{r['bound_per_s']:.2f}"),
        phrase("the run reached {} of it", _pct(r["share_of_bound"], 0)),
        phrase("The run before (the results file at commit {}: {} answered a second, {} of a cap of {}) and the one "
               "before that (commit {}: {} answered a second, {} of a cap of {})", LOAD_PREVIOUS,
               f"{prev['all']['per_s']:.2f}", _pct(previous["share_of_bound"], 0), f"{previous['bound_per_s']:.2f}",
               LOAD_DRY_ANEW, f"{dry_anew['all']['per_s']:.2f}", _pct(dry_anew_run["share_of_bound"], 0),
               f"{dry_anew_run['bound_per_s']:.2f}"),
        phrase("Since the run at commit {}, each chat reply's DRY sampler", LOAD_DRY_ANEW),
        phrase("the sentiment p50 went from {} s to {} s", f"{prev['sentiment']['p50_s']:.2f}",
               f"{lat['sentiment']['p50_s']:.2f}"),
        phrase("sentiment requests alone would cap at {} a second", f"{1 / r['model_s_per_request']['sentiment']:.2f}"),
        phrase("Chat turns are slow here (p50 {} s)", f"{lat['chat']['p50_s']:.0f}"),
        phrase("all {} sessions' own KV states fit the {} MB cache", r["clients"], r["cache_mb"]),
        phrase("Server RSS grew {} after the warm-up", _pct(growth)),
        phrase("exit code after SIGTERM {}.", r["server_exit_code_after_sigterm"]),
    ]  # fmt: skip


def mixed_step_prose() -> list[Phrase]:
    r, before = _json("mixed_step"), _json_at(MIXED_STEP_BEFORE, "mixed_step")
    previous = _json_at(MIXED_STEP_PREVIOUS, "mixed_step")
    first, last = r["sentiment_by_phase"][0], r["sentiment_by_phase"][-1]
    p_last = previous["sentiment_by_phase"][-1]

    def cost(run: dict[str, Any]) -> str:  # what the split costs the replies' aggregate
        return _pct(1 - run["replies_tok_s"]["apart"] / run["replies_tok_s"]["together"], 0)

    return [
        phrase("(in process, four {}-token replies, sentiment requests one at a time while they stream, the two ways "
               "alternating over {} rounds)", r["reply_tokens"], r["rounds"]),
        phrase("a sentiment request sent once the replies had {} tokens took {} s with the reply tokens apart and {} s "
               "with them in the batch ({} s and {} s in their first {} tokens); the replies' aggregate was {} and {} "
               "tokens/s", last["generated"].split("-")[0], f"{last['apart_p50_s']:.2f}",
               f"{last['together_p50_s']:.2f}", f"{first['apart_p50_s']:.2f}", f"{first['together_p50_s']:.2f}",
               first["generated"].split("-")[1], f"{r['replies_tok_s']['apart']:.1f}",
               f"{r['replies_tok_s']['together']:.1f}"),
        phrase("In the run before, on the weights as the file has them (the results file at commit {}), the same "
               "request took {} s and {} s, and the replies' aggregate was {} and {} tokens/s", MIXED_STEP_PREVIOUS,
               f"{p_last['apart_p50_s']:.2f}", f"{p_last['together_p50_s']:.2f}",
               f"{previous['replies_tok_s']['apart']:.1f}", f"{previous['replies_tok_s']['together']:.1f}"),
        phrase("({} and {} in the run before that, when the reply tokens went first: the results file at commit {})",
               f"{before['replies_tok_s']['apart']:.1f}", f"{before['replies_tok_s']['together']:.1f}",
               MIXED_STEP_BEFORE),
        phrase("So the split saves a classification sent late in long replies a sixth of its time, and costs the "
               "replies {} of their aggregate in this run and {} in the run before", cost(r), cost(previous)),
    ]  # fmt: skip


def core_prose() -> list[Phrase]:
    r, before, widened = _json("core"), _json_at(CORE_AS_IS, "core"), _json_at(CORE_WIDENED_BEFORE, "core")
    _widened(r, "core")
    return [
        phrase("A run on the widened weights just before this one (the results file at commit {}) gave {} s and {} "
               "tokens/s", CORE_WIDENED_BEFORE, f"{widened['sentiment_p50_s']:.3f}",
               f"{widened['chat_tokens_per_s']:.1f}"),
        phrase("The table is for the widened weights that `allinone serve` loads by default. In the run before, on the "
               "weights as the file has them (the results file at commit {}), sentiment p50 was {} s, chat decode {} "
               "tokens/s and peak RSS {} MB, {} MB less than now", CORE_AS_IS,
               f"{before['sentiment_p50_s']:.3f}", f"{before['chat_tokens_per_s']:.1f}", f"{before['peak_rss_mb']:.0f}",
               f"{r['peak_rss_mb'] - before['peak_rss_mb']:.0f}"),
    ]  # fmt: skip


def structured_prose() -> list[Phrase]:
    return [phrase("best of {} alternating rounds", _json("structured")["rounds"])]


def session_sync_prose() -> list[Phrase]:
    r, core = _json("session_sync"), _json("core")
    tokens = r["config"]["max_tokens"]
    quiet_turn_s = core["chat_first_token_s"] + tokens / core["chat_tokens_per_s"]  # core.json's first token + decode
    share = math.ceil(r["full_extra_ms"] / (10 * quiet_turn_s))  # "under": the percentage rounded up
    return [
        phrase("{} ms per saved turn pair (p50; {} ms with NORMAL), {}% of a {}-token chat turn as measured on the "
               "busy machine ({} s), and under {}% of the ~{} s such a turn takes on a quiet one (the Performance "
               "table's {} tokens/s): well under the {}% that would have kept NORMAL", f"{r['full_extra_ms']:+.1f}",
               f"{r['append']['NORMAL']['p50_ms']:.2f}", f"{r['full_extra_pct_of_turn']:.2f}", tokens,
               f"{r['chat_turn']['NORMAL']['p50_ms'] / 1000:.1f}", share, f"{quiet_turn_s:.2f}",
               f"{core['chat_tokens_per_s']:.1f}", f"{r['config']['threshold_pct']:.0f}"),
    ]  # fmt: skip


def event_loop_prose() -> list[Phrase]:
    r = _json("event_loop")
    kinds = dict(r["kinds"])
    baseline, _ = kinds.pop("ordinary texts (baseline)"), kinds.pop("idle")
    medians = [k["p50_ms"] for k in kinds.values()]
    polls = sum(k["polls"] for k in r["kinds"].values())
    return [
        phrase("one body of {} KB of each kind above, `/health` polled every {} ms meanwhile, nothing else running "
               "on the {}-core machine), `/health` took {} to {} ms at the median and at most {} ms for every kind of "
               "body",
               r["config"]["body_bytes"] // 1000, f"{r['config']['poll_s'] * 1000:.0f}", r["machine"]["cpus"],
               f"{min(medians):.1f}", f"{max(medians):.1f}", f"{max(k['max_ms'] for k in kinds.values()):.1f}"),
        phrase("against {} ms for {} ordinary short texts posted first: no poll in about {} went over",
               f"{baseline['max_ms']:.1f}", r["config"]["baseline_posts"], f"{round(polls, -3):,}"),
    ]  # fmt: skip


def chat_quality_prose() -> list[Phrase]:
    r, t04 = _json("chat_quality_current"), _json("chat_quality_t04")
    held, held04 = r["summary"]["held/all"], t04["summary"]["held/all"]
    extra, extra04 = (_json(f"chat_quality_extra_{n}")["summary"]["extra/all"] for n in ("current", "t04"))

    def failed(res: dict[str, Any]) -> list[list[str]]:
        return [row["failed"] for row in res["replies"] if row["split"] == "held" and row["failed"]]

    now, before = failed(r), failed(t04)
    first = [row for row in _json("chat_quality_start1")["replies"] if "boilerplate" in row["failed"]]
    return [
        phrase("{} pass every check against a target of {} ({} replies of {} fail, {} of them on mood",
               _pct(held["all"]), _pct(r["targets_held"]["all"], 0), WORDS[len(now)], held["n"],
               WORDS[sum("mood" in f for f in now)]),
        phrase("The previous default passed {} of them, {} failing on mood", _pct(held04["all"]),
               WORDS[sum("mood" in f for f in before)]),
        phrase("On the extra set, {} of {} replies pass every check now against {} with the previous default (mood: {} "
               "against {})", _pct(extra["all"]), extra["n"], _pct(extra04["all"]), _pct(extra["mood"]),
               _pct(extra04["mood"])),
        phrase("showed {} such refusal", WORDS[len(first)]),
        phrase("on {} more messages written for the choice",
               len(_jsonl(ROOT / "benchmarks" / "data" / "chat_messages_extra.jsonl"))),
    ]  # fmt: skip


def _tally(rows: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Hand labels of configuration b's replies against a's: (b preferred, a preferred, ties)."""
    b_wins, ties = sum(r["mine"] == r["b_is"] for r in rows), sum(r["mine"] == "tie" for r in rows)
    return b_wins, len(rows) - b_wins - ties, ties


def _hand_labels(a: str, b: str, split: str, lang: str = "all") -> tuple[int, int, int]:
    """Our blind labels of configuration b's replies against a's on one half (and language): (b preferred, a
    preferred, ties)."""
    halves = {m["id"]: (m["split"], m["lang"]) for m in _jsonl(ROOT / "benchmarks" / "data" / "chat_messages.jsonl")}
    rows = [r for r in _jsonl(ROOT / "benchmarks" / "data" / f"chat_preference_labels_{a}_vs_{b}.jsonl")
            if halves[r["id"]][0] == split and lang in ("all", halves[r["id"]][1])]  # fmt: skip
    return _tally(rows)


def chat_sampling_prose() -> list[Phrase]:
    t04, t02, held = (
        _hand_labels("dry07", "t04", "tune"),
        _hand_labels("dry07", "t02", "tune"),
        _hand_labels("dry07", "t04", "held"),
    )
    tune, tune07 = (
        _json("chat_quality_t04")["summary"]["tune/all"],
        _json("chat_quality_dry07")["summary"]["tune/all"],
    )
    return [
        phrase("prefer the replies at 0.4 to those at 0.7 in {} pairs to {} ({} ties)", *t04),
        phrase("and those at 0.2 in {} to {} ({} ties)", *t02),
        phrase("0.4 passes fewer of the checks on the tuning half ({} of replies pass every check, against {})",
               _pct(tune["all"]), _pct(tune07["all"])),
        phrase("put the replies at 0.4 against those at 0.7 {} to {}, with {} ties", *held),
    ]  # fmt: skip


def model_preference_prose() -> list[Phrase]:
    return [
        phrase("prefer the 1.5B model's replies to the default's in {} pairs to {} ({} ties)",
               *_hand_labels("t04", "t04-1.5b", "held")),
    ]  # fmt: skip


def _label_split(a: str, b: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Our labels of b against a, on the pairs where b's reply opens with its chat task's reply start, and on those
    where nothing gives b away (no start, and a's reply in the message's language)."""
    starts = tuple(
        w for by_lang in _json(f"chat_quality_{b}")["chat_task"]["reply_start"].values() for w in by_lang.values()
    )
    rows = _jsonl(ROOT / "benchmarks" / "data" / f"chat_preference_labels_{a}_vs_{b}.jsonl")

    def same_language(r: dict[str, Any]) -> bool:
        return language_of(r["A" if r["b_is"] == "B" else "B"]) == language_of(r["message"])

    started = [r for r in rows if r[r["b_is"]].startswith(starts)]
    blind = [r for r in rows if not r[r["b_is"]].startswith(starts) and same_language(r)]
    return _tally(started), _tally(blind)


def chat_preference_prose() -> list[Phrase]:
    r = _json("chat_preference_before_vs_current_1")
    judged, hand = r["all"], r["agreement_with_hand_labels"]
    started, blind = _label_split("before", "current")
    return [
        phrase("where the start applies, {} to {} ({} ties)", *started),
        phrase("where nothing gives the new reply away ({} pairs), the labels are even: {} to {}, {} ties", sum(blind),
               *blind),
        phrase("prefer the new replies {} to {}, with {} ties (Chinese {} to {}, English {} to {})",
               *_hand_labels("before", "current", "held"), *_hand_labels("before", "current", "held", "zh")[:2],
               *_hand_labels("before", "current", "held", "en")[:2]),
        phrase("For the previous default, temperature 0.4 without the start: {} to {}, {} ties",
               *_hand_labels("before", "t04", "held")),
        phrase("with DRY at temperature 0.7: {} to {}, {} ties", *_hand_labels("before", "dry07", "held")),
        phrase("prefers the new replies in {} of {} held-out pairs ({}; Chinese {}, English {}), and its two orders "
               "agree on {} of pairs", judged["b_wins"], judged["pairs"], _pct(judged["b_win_rate"]),
               _pct(r["zh"]["b_win_rate"], 0), _pct(r["en"]["b_win_rate"], 0), _pct(judged["consistent"], 0)),
        phrase("it agrees with our labels on {} of the {} pairs both decide ({})", hand["agree"], hand["compared"],
               _pct(hand["rate"])),
    ]  # fmt: skip


def _looks() -> tuple[int, int]:
    """Looks at ChnSentiCorp test logged by accuracy.py --test: in all, and of the configuration in accuracy.json."""
    looks = _jsonl(RESULTS / "test_looks.jsonl")
    config = _json("accuracy")["configuration"]
    return len(looks), sum((x["prompt"], x["head"]) == (config["prompt"], config["head"]) for x in looks)


def accuracy_prose() -> list[Phrase]:
    r, speed = _json("accuracy")["results"], _json("head_speed")
    on, off = speed["overall"]["with head"], speed["overall"]["prompt-only"]
    test, dev = r["chnsenticorp_test"], r["chnsenticorp_dev"]
    gains = [r[n]["with_head"] - r[n]["prompt_only"] for n in HELD_OUT_SETS]
    total, ours = _looks()
    ratio = speed["ratio"]["texts_per_s"]
    earlier = [_pct(x["test"]["with_head"]) for x in _jsonl(RESULTS / "test_looks.jsonl")[:2]]
    return [
        phrase("the head reaches {} on ChnSentiCorp test against {} for label scoring alone ({} and {} on dev)",
               _pct(test["with_head"]), _pct(test["prompt_only"]), _pct(dev["with_head"]), _pct(dev["prompt_only"])),
        phrase("On the four held-out domains it changes accuracy by {} to {} points", f"{100 * min(gains):+.1f}",
               f"{100 * max(gains):+.1f}"),
        phrase("{} texts/s with the head against {} without ({} of it)",
               f"{on['texts_per_s']:.2f}", f"{off['texts_per_s']:.2f}", _pct(ratio)),
        phrase("chat decodes at {} tokens/s with the probe and {} without",
               f"{on['decode_tokens_per_s']:.1f}", f"{off['decode_tokens_per_s']:.1f}"),
        phrase("The two previous heads, trained on the mix with 2,000 and with 4,000 ChnSentiCorp texts, had {} and {} "
               "on test at their one look each", *earlier),
        phrase("`benchmarks/results/test_looks.jsonl` logs every look at ChnSentiCorp test since it was added: {} so "
               "far, {} of them for the configuration above", total, ours),
    ]  # fmt: skip


def tune_sentiment_prose() -> list[Phrase]:
    results = _json("tune_sentiment")["results"]

    def dev(shots: int, calibrated: bool) -> str:  # with the one-word verbaliser, the one kept
        return _pct(next(r["dev_accuracy"] for r in results if (r["shots"], r["verbaliser"], r["calibrated"])
                         == (shots, "one", calibrated)))  # fmt: skip

    return [
        phrase("(`benchmarks/tune_sentiment.py`, dev[:{}]): zero-shot {}, with contextual calibration {}; {} few-shot "
               "examples {}, {} examples {}", results[0]["n_dev"], dev(0, False), dev(0, True), 4, dev(4, False), 8,
               dev(8, False)),
    ]  # fmt: skip


def _learned_mixes() -> tuple[str, str, str, str]:
    """The mixing weights learned for the chosen training set's best heads, and what they cost on dev."""
    results, train = _json("head_choice")["results"], _chosen_head()["train"]
    plain = {(x["features"], x["l2"], x["free"]): x for x in results if (x["mix"], x["gate"]) == (1.0, 0.5)}
    learned = [x for x in results if x["train"] == train and (x["mix"], x["gate"]) != (1.0, 0.5)]
    cost = [100 * (plain[(x["features"], x["l2"], x["free"])]["dev"]["head"] - x["dev"]["head"]) for x in learned]
    mixes = [x["mix"] for x in learned]
    return f"{min(mixes):g}", f"{max(mixes):g}", f"{min(cost):.1f}", f"{max(cost):.1f}"


def head_choice_prose() -> list[Phrase]:
    base, rows = _choice_rows()
    old, pick = rows[0], rows[-1]
    worst = min(HELD_OUT, key=lambda n: old[n]["head"] - old[n]["prompt"])
    n_train = json.loads(HEAD.read_text(encoding="utf-8"))["info"]["n_train"]
    gains = [pick[n]["head"] - base[n]["prompt"] for n in HELD_OUT]
    return [
        phrase("The old head, trained on ChnSentiCorp alone, had the best dev accuracy ({}) and lost {} points on {}",
               _pct(old["dev"]["head"]), f"{100 * (base[worst]['prompt'] - old[worst]['head']):.1f}",
               SHORT[worst.removeprefix("heldout_")]),
        phrase("it loses nothing on any held-out domain ({} to {} points) and gains {} points on dev",
               f"{100 * min(gains):+.1f}", f"{100 * max(gains):+.1f}",
               f"{100 * (pick['dev']['head'] - base['dev']['prompt']):+.1f}"),
        phrase("for the mix with all ChnSentiCorp texts, weights of {} to {} on the head, which cost {} to {} points "
               "on dev", *_learned_mixes()),
        phrase("trained on {} texts", f"{n_train:,}"),
        phrase("It is a {} KB JSON file", round(HEAD.stat().st_size / 1000)),
    ]  # fmt: skip


def probe_cost_prose() -> list[Phrase]:
    r = _json("probe_cost")
    gate, python = r["per_off"]["gate"], r["per_off"]["python"]
    before = _json_at(PROBE_COST_BEFORE, "probe_cost")["per_off"]
    b_gate, b_python = before["gate"], before["python"]
    off_texts = r["rounds"]["off"]["sentiment_ms_per_text"]

    def both(key: str) -> list[str]:
        return [f"{gate[key]:.3f}", f"{python[key]:.3f}"]

    return [
        phrase("runs chat streams and sentiment requests on three servers in {} rounds", r["knobs"]["rounds"]),
        phrase("time inside `llama_decode` per step was {} of heads off's behind the gate and {} with the Python "
               "callback with one stream ({} and {} with four)", *both("one_decode_ms_per_step"),
               *both("four_decode_ms_per_step")),
        phrase("one stream's speed {} and {}, four streams' aggregate {} and {}", *both("one_tok_s"),
               *both("four_tok_s")),
        phrase("sentiment, {} texts a round, {} and {} of heads off's time inside `llama_decode` per text",
               r["knobs"]["n_sentiment"], *both("sentiment_ms_per_text")),
        phrase("heads off's own time per text ranged from {} to {} ms between rounds", f"{min(off_texts):.0f}",
               f"{max(off_texts):.0f}"),
        phrase("The run before, on the weights as the file has them (the results file at commit {}), gave {} and {} "
               "for sentiment and {} and {} for four streams' aggregate", PROBE_COST_BEFORE,
               f"{b_gate['sentiment_ms_per_text']:.3f}", f"{b_python['sentiment_ms_per_text']:.3f}",
               f"{b_gate['four_tok_s']:.3f}", f"{b_python['four_tok_s']:.3f}"),
    ]  # fmt: skip


def stream_gap_prose() -> list[Phrase]:
    r, before = _json("stream_gap"), _json_at("8dc85d5", "stream_gap")  # its first run
    last = _json_at(STREAM_GAP_BEFORE, "stream_gap")
    ungated = _json_at("3b6669b", "stream_gap")  # the run before the probe's C gate
    unequal = _json_at("03be5c9", "stream_gap")  # the run before every way sampled with the chat task's DRY
    step, step_before = r["one_stream_step"], last["one_stream_step"]
    four = r["4_streams"]

    def split(run: dict[str, Any]) -> list[str]:
        return [f"{run[f'{n}_streams'][f'{way}_per_peer']:.2f}" for n in (1, 4) for way in ("inproc", "http")]

    return [
        phrase("one stream ran at {} of llama-server's speed in process and {} over HTTP, four streams at {} and {}",
               *split(r)),
        phrase("(the run before, the results file at commit {}: {} and {}, {} and {}; with DRY on our server alone: "
               "{} and {}, {} and {}; before the gate: {} and {}, {} and {}; its first run: {} and {}, {} and {})",
               STREAM_GAP_BEFORE, *split(last), *split(unequal), *split(ungated), *split(before)),
        phrase("our `llama_decode` took {} of llama-server's time per generated token, and the whole step {} ms more",
               f"{step['decode_per_peer_token']:.2f}", f"{step['outside_decode_ms']:.1f}"),
        phrase("our whole step took {} of llama-server's time per token ({} in the run before)",
               f"{step['wall_per_peer_token']:.3f}", f"{step_before['wall_per_peer_token']:.3f}"),
        phrase("four streams over HTTP ran at {} of their speed in process",
               f"{four['http_tok_s'] / four['inproc_tok_s']:.2f}"),
    ]  # fmt: skip


def thread_cpu_prose() -> list[Phrase]:
    m, earlier = _json("thread_cpu")["mean"], "5c8f502"  # the run before callers got their chunks between decodes
    before = _json_at(earlier, "thread_cpu")["mean"]
    dry_first = _json_at(DRY_FIRST, "thread_cpu")["mean"]
    made_anew = _json_at(DRY_MADE_ANEW, "thread_cpu")["mean"]
    return [
        phrase("llama.cpp's two compute threads take {} of it and every other thread (HTTP, the events, the stream "
               "workers) {}", _pct(m["compute_threads_share"]), _pct(m["other_threads_share"])),
        phrase("{} of the wall time is spent inside `llama_decode`, with {} ms of step work",
               _pct(m["in_decode_share"]), f"{m['outside_decode_ms_per_step']:.1f}"),
        phrase("it was {} and {} ms (the results file at commit {})", _pct(before["in_decode_share"]),
               f"{before['outside_decode_ms_per_step']:.1f}", earlier),
        phrase("before the sampler took top-k before DRY, {} and {} ms (the results file at commit {})",
               _pct(dry_first["in_decode_share"]), f"{dry_first['outside_decode_ms_per_step']:.1f}", DRY_FIRST),
        phrase("before each reply's DRY sampler was a clone, {} and {} ms (the results file at commit {})",
               _pct(made_anew["in_decode_share"]), f"{made_anew['outside_decode_ms_per_step']:.1f}", DRY_MADE_ANEW),
    ]  # fmt: skip


def fewshot_domains_prose() -> list[Phrase]:
    dev = _json("fewshot_domains")["results"]["dev"]
    return [
        phrase("score {} on dev with label scoring alone, against {} for the hotel reviews", _pct(dev["variant"]),
               _pct(dev["current"])),
    ]  # fmt: skip


def warm_start_prose() -> list[Phrase]:
    later = _json("warm_start")["later"]
    return [phrase("each kind of request once after ready, then {} more, every one with a text of its own", later)]


def engines_prose() -> list[Phrase]:
    r = _json("engines")
    return [
        phrase("(`benchmarks/engines.py`, {} ChnSentiCorp dev texts, {} threads each", r["texts"], r["n_threads"]),
        phrase("Sentiment labels agree on **{}** of the {} texts (target ≥ {})", _pct(r["agreement"]), r["texts"],
               _pct(r["agreement_target"], 0)),
    ]  # fmt: skip


PHRASES: dict[str, Callable[[], list[Phrase]]] = {
    "lean_install": lean_install_prose,
    "routing": routing_prose,
    "tasks": tasks_prose,
    "http_overhead": http_overhead_prose,
    "concurrency": concurrency_prose,
    "sampler": sampler_prose,
    "kv_states": kv_states_prose,
    "parallel": parallel_prose,
    "batching": batching_prose,
    "engine_config": engine_config_prose,
    "widen": widen_prose,
    "load": load_prose,
    "mixed_step": mixed_step_prose,
    "core": core_prose,
    "structured": structured_prose,
    "session_sync": session_sync_prose,
    "event_loop": event_loop_prose,
    "chat_quality": chat_quality_prose,
    "chat_sampling": chat_sampling_prose,
    "chat_preference": chat_preference_prose,
    "model_preference": model_preference_prose,
    "accuracy": accuracy_prose,
    "tune_sentiment": tune_sentiment_prose,
    "head_choice": head_choice_prose,
    "warm_start": warm_start_prose,
    "fewshot_domains": fewshot_domains_prose,
    "probe_cost": probe_cost_prose,
    "thread_cpu": thread_cpu_prose,
    "stream_gap": stream_gap_prose,
    "engines": engines_prose,
}

# Figures with a unit or a decimal point outside code that are not measurements:
# README text around the figure -> why.
NOT_MEASURED: dict[str, str] = {
    "Python ≥ 3.11": "a requirement",
    "max(10 %, 15 ms)": "the budget rule, BUDGET_REL and BUDGET_MS of benchmarks/http_overhead.py",
    "against a target of 1.0 s": "a target",
    "the default 8192-token context": "a setting",
    "`ALLINONE_N_CTX=16384`: about 12 KB of KV cache per token": "settings, and the model's shape: 24 layers x 2 KV "
    "heads x 64 dims x K and V x 2 bytes",
    "≥ 99% of texts, max |Δp| ≤ 0.06": "targets",
    "clients for 60 s": "DURATION_S of benchmarks/load.py (load.json keeps the wall time that per s divides by)",
    "(target 2.18;": "a target: twice the rate before continuous batching",
    "(target under 10%)": "a target, RSS_GROWTH_LIMIT of benchmarks/load.py",
    "Tested with 100 KB texts": "a test input",
    "bodies up to 1 MB of letters": "a test input",
    "`/health` stays under 50 ms throughout": "the bound tests/test_event_loop.py asserts",
    "a 1 MB+ file": "a test input",
    "went over 50 ms": "TARGET_MS of benchmarks/event_loop.py",
    "The 50 ms bound is also tested": "the bound tests/test_event_loop.py asserts",
    "36 bodies of ~1 MB": "a test input",
    "A repetition penalty of 1.1 measured no better": "a setting tried",
    "the temperature went from 0.7 to 0.4 (top-p stays 0.8)": "settings",
    "prefer the replies at 0.4 to those at 0.7": "the settings compared",
    "and those at 0.2 in": "a setting compared",
    "0.4 passes fewer of the checks": "a setting",
    "with DRY at temperature 0.7, at 0.4 (the previous default)": "settings",
    "our labels put the replies at 0.4 against those at 0.7": "the settings compared",
    "For the previous default, temperature 0.4 without the start": "a setting",
    "an earlier session; with DRY at temperature 0.7": "a setting",
    "`dry_multiplier` 0.8, its usual setting": "a setting",
    "(`mix, ChnSentiCorp ×2`: 4,000)": "the training set's size, sentiment_data.py's knobs",
    "(Q4_K_M, 491 MB)": "the size of the model file",
    "past the 90% we aimed for": "a target",
    "with 95% Wilson intervals, and a paired 95% interval": "the confidence level of the intervals",
    "no more than 0.5 points on any held-out domain": "the target, MAX_DROP of benchmarks/head_choice.py",
    "Of those that stay within 0.5 points everywhere": "the target, MAX_DROP of benchmarks/head_choice.py",
}

# A figure with a unit, or any number with a decimal point (a ratio, a rate), not inside a word or a version.
MEASURE = re.compile(
    r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?\s?(?:%|(?:ms|s|MB|KB|GB|tok/s|tokens/s|texts/s|minutes)\b)"
    r"|(?<![\w.])[-+]?\d+\.\d+(?![\w.])"
)
# What is not prose: generated blocks, code blocks, inline code, comments.
NOT_PROSE = re.compile(r"<!-- (table|transcript): .*?<!-- /\1 -->|```.*?```|`[^`\n]*`|<!--.*?-->", re.S)


def phrases() -> list[Phrase]:
    return [p for make in PHRASES.values() for p in make()]


def _found_once(p: Phrase, text: str) -> re.Match[str]:
    found = list(p.pattern.finditer(text))
    if len(found) != 1:
        raise ValueError(f"the README holds {len(found)} times, not once: {p.template!r}")
    return found[0]


def _fill(m: re.Match[str], figures: tuple[str, ...]) -> str:
    """The matched phrase with its figures replaced, its own text and line breaks kept."""
    out, at = [], m.start()
    for i, figure in enumerate(figures, 1):
        out += [m.string[at : m.start(i)], figure]
        at = m.end(i)
    return "".join(out) + m.string[at : m.end()]


def rewrite(text: str) -> str:
    """The README text with every table block made anew and every phrase's figures put in from the JSON files."""
    text = BLOCK.sub(lambda m: m.group(1) + TABLES[m.group("name")]() + m.group(4), text)
    for p in phrases():
        m = _found_once(p, text)
        text = text[: m.start()] + _fill(m, p.figures) + text[m.end() :]
    return text


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def unchecked(text: str) -> list[str]:
    """Figures in the prose that no phrase puts in and NOT_MEASURED does not explain, as 'line N: figure'."""
    prose = NOT_PROSE.sub(lambda m: " " * len(m.group()), text)  # blanked, so that offsets stay the same
    covered = {m.start(i) for p in phrases() for m in p.pattern.finditer(text) for i in range(1, len(p.figures) + 1)}
    explained = [(m.start(), m.end()) for s in NOT_MEASURED for m in re.finditer(loose(s), text)]
    return [
        f"line {_line(text, m.start())}: {m.group()}"
        for m in MEASURE.finditer(prose)
        if m.start() not in covered and not any(a <= m.start() < b for a, b in explained)
    ]


def main() -> None:
    text = README.read_text(encoding="utf-8")
    unknown = {m.group("name") for m in BLOCK.finditer(text)} - set(TABLES)
    if unknown:
        sys.exit(f"README names tables with no formatter: {sorted(unknown)}")
    try:
        text = rewrite(text)
    except ValueError as e:
        sys.exit(f"README not rewritten: {e}")
    README.write_text(text, encoding="utf-8")
    if missing := unchecked(text):
        sys.exit("figures with no results file and no reason in NOT_MEASURED:\n" + "\n".join(missing))


if __name__ == "__main__":
    main()
