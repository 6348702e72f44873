"""The default 0.5B model against the optional 1.5B one: sentiment accuracy, speed, memory, chat checks.

Run: ALLINONE_N_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/model_choice.py
(needs `pip install 'qwen-allinone[qwen-1.5b]'`; each model is measured in its own process; prints the README table
and writes benchmarks/results/model_choice.json). Sentiment: `allinone eval sentiment` on the first N_DEV
ChnSentiCorp dev texts, prompt-only. Chat checks: read from benchmarks/results/chat_quality_NAME.json, written by
`benchmarks/chat_quality.py held NAME [--model REF]` (or `all`) with the chat task of this version;
`model_choice.py --checks` reads them again into model_choice.json without measuring anything else.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# --- knobs ---------------------------------------------------------------------------------------
MODELS = {"default": "current", "qwen-1.5b": "current-1.5b"}  # model reference -> its chat_quality result name
N_DEV = 400  # ChnSentiCorp dev texts for sentiment accuracy
CHAT_PROMPTS = ["最近工作压力很大，晚上总是睡不着，有什么办法吗？", "Can you suggest a simple plan to start running?"]
CHAT_MAX_TOKENS = 96

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "chnsenticorp_dev.jsonl"
RESULTS = ROOT / "benchmarks" / "results"


def speed(ref: str) -> dict[str, Any]:
    """Load time, chat first token (the task prefix cached) and decode speed, peak RSS, in this process."""
    from allinone.events import Done, TaskCall, Token
    from allinone.models import resolve_model
    from allinone.service import TaskService
    from allinone.settings import Settings

    settings = Settings(model=ref, n_ctx=4096, use_heads=False)  # both models by label scoring (the head is 0.5B-only)
    path = resolve_model(ref, settings).path  # assembled and verified before the load is timed
    start = time.perf_counter()
    service = TaskService(settings)
    service.engine  # noqa: B018
    load_s = time.perf_counter() - start
    for text in ("你好", "hello"):  # the chat prefix of each language (its examples come last) computed and cached,
        for _ in service.run(TaskCall("chat", text, options={"max_tokens": 1})):  # as for every chat after the first
            pass
    firsts, rates = [], []
    for i, text in enumerate(CHAT_PROMPTS):
        start, first, n = time.perf_counter(), None, 0
        for event in service.run(TaskCall("chat", text, options={"seed": i, "max_tokens": CHAT_MAX_TOKENS})):
            if isinstance(event, Token):
                first = first or time.perf_counter() - start
            elif isinstance(event, Done):
                n = event.result.usage.completion_tokens
        firsts.append(first or 0.0)
        rates.append(n / (time.perf_counter() - start - (first or 0.0)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": service.engine.info.model,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "load_s": round(load_s, 2),
        "first_token_s": round(statistics.median(firsts), 3),
        "decode_tokens_per_s": round(statistics.median(rates), 1),
        "peak_rss_mb": round(rss_mb),
    }


def sentiment(ref: str) -> dict[str, Any]:
    """`allinone eval sentiment` on the first N_DEV dev texts, in its own process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "allinone", "eval", "sentiment", str(DEV), "--limit", str(N_DEV)]
        subprocess.run([*cmd, "--model", ref, "--output", out], check=True, stdout=subprocess.DEVNULL)
        m = json.loads((Path(out) / "metrics.json").read_text())
    return {
        "dev_accuracy": m["accuracy"],
        "macro_f1": round(m["macro_f1"], 4),
        "texts_per_s": round(m["texts_per_s"], 2),
    }


def chat_checks(name: str) -> dict[str, Any]:
    path = RESULTS / f"chat_quality_{name}.json"
    if not path.is_file():
        return {}
    s = json.loads(path.read_text(encoding="utf-8"))
    held = s["summary"]["held/all"]  # the held-out half is what the table shows; the tuning half may not be run
    out = {"held_all_checks": held["all"], "held_language": held["language"], "p50_reply_s": s["p50_s"]}
    if "tune/all" in s["summary"]:
        out["tune_all_checks"] = s["summary"]["tune/all"]["all"]
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--speed":  # the child process measuring one model
        print(json.dumps(speed(sys.argv[2])))
        return
    if sys.argv[1:] == ["--checks"]:  # the chat checks again, after a new chat_quality.py run; nothing measured
        saved = json.loads((RESULTS / "model_choice.json").read_text(encoding="utf-8"))
        for ref, name in MODELS.items():
            saved["models"][ref] |= chat_checks(name)
        (RESULTS / "model_choice.json").write_text(json.dumps(saved, ensure_ascii=False, indent=2) + "\n")
        return
    rows = {}
    for ref, name in MODELS.items():
        child = subprocess.run([sys.executable, __file__, "--speed", ref], capture_output=True, text=True, check=True)
        rows[ref] = json.loads(child.stdout.splitlines()[-1]) | sentiment(ref) | chat_checks(name)
        print(ref, rows[ref], file=sys.stderr)
    result = {"n_dev": N_DEV, "threads": os.environ.get("ALLINONE_N_THREADS", "all"), "models": rows}
    (RESULTS / "model_choice.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(
        "| | file | load | sentiment dev acc. | sentiment texts/s | chat tokens/s | first token | peak RSS "
        "| chat checks, held-out | language, held-out |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ref, r in rows.items():
        checks = (
            f"{100 * r['held_all_checks']:.1f}% | {100 * r['held_language']:.1f}%"
            if "held_all_checks" in r
            else "- | -"
        )
        print(
            f"| `{ref}` | {r['file_mb']:.0f} MB | {r['load_s']:.1f} s | {100 * r['dev_accuracy']:.1f}% | "
            f"{r['texts_per_s']:.2f} | {r['decode_tokens_per_s']:.1f} | {r['first_token_s']:.2f} s | "
            f"{r['peak_rss_mb']} MB | {checks} |"
        )


if __name__ == "__main__":
    main()
