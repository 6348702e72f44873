"""Chat quality of the combined flow (sentiment line, then the reply) on a written message set, by objective checks.

Run: ALLINONE_N_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/chat_quality.py [tune|held|all] [NAME]
     [--model REF] [--tasks-dir DIR] [--tag TEMPLATE] [--keep-example-order] [--option KEY=VALUE ...] [--rescore]
     [--messages main|extra]
(prints pass rates per check, split and language, and the failures; writes benchmarks/results/chat_quality_NAME.json;
--rescore checks that file's replies again without the model, after a change to the checks)

The set (benchmarks/data/chat_messages.jsonl, 96 items written for this benchmark: Chinese and English, positive,
negative and neutral, good news, troubles, grief, health, work, relationships, advice, small talk and two-turn
follow-ups) is split in halves: the chat task was tuned on `tune` only; `held` is the held-out figure. Every turn
goes through the combined flow (TaskService.run) with each seed of SEEDS; the reply to the last turn is checked.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from allinone import chat
from allinone.chat import ChatSession
from allinone.events import Classified, Done, TaskCall
from allinone.generate import Generated
from allinone.replycheck import CHECKS, check_reply
from allinone.service import TaskService
from allinone.settings import Settings

# --- knobs ---------------------------------------------------------------------------------------
SEEDS = (1, 2)  # each item is answered once per seed
N_CTX = 4096
TARGETS = {"language": 1.0, "boilerplate": 1.0, "code": 1.0, "all": 0.95}  # held-out pass rates

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "chat_messages.jsonl"
# 51 more messages (split `extra`), written later to choose the chat task's reply_start beside the tuning half: a
# second tuning set, not a held-out one. `--messages extra` runs them
EXTRA = ROOT / "benchmarks" / "data" / "chat_messages_extra.jsonl"
RESULTS = ROOT / "benchmarks" / "results"


def load_items(split: str, path: Path = DATA) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split == "all" or r["split"] == split]


def converse(service: TaskService, turns: list[str], seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """Every turn through the combined flow in one session; the last reply, its sentiment and timing."""
    session = ChatSession()
    for text in turns:
        start = time.perf_counter()
        label, parts, finish, tokens = "", [], None, 0
        call = TaskCall("chat", text, options={**options, "seed": seed}, session=session, sentiment="sentiment")
        for event in service.run(call):
            if isinstance(event, Classified):
                label = event.result.label
            elif isinstance(event, Done) and isinstance(event.result, Generated):
                parts = [event.result.text]
                finish, tokens = event.result.finish_reason, event.result.usage.completion_tokens
        seconds = time.perf_counter() - start
    return {"sentiment_label": label, "reply": "".join(parts), "finish_reason": finish, "tokens": tokens, "s": seconds}


def rate(rows: list[dict[str, Any]], check: str) -> float:
    if not rows:
        return 0.0
    if check == "all":
        return sum(not r["failed"] for r in rows) / len(rows)
    return sum(check not in r["failed"] for r in rows) / len(rows)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("tune", "held", "extra"):
        for lang in ("all", "zh", "en"):
            part = [r for r in rows if r["split"] == split and lang in ("all", r["lang"])]
            if part:
                out[f"{split}/{lang}"] = {"n": len(part)} | {c: round(rate(part, c), 4) for c in (*CHECKS, "all")}
    return out


def print_table(result: dict[str, Any]) -> None:
    cols = (*CHECKS, "all")
    print(f"{'':<10} {'n':>4} " + " ".join(f"{c[:8]:>8}" for c in cols))
    for key, s in result["summary"].items():
        print(f"{key:<10} {s['n']:>4} " + " ".join(f"{100 * s[c]:>7.1f}%" for c in cols))
    counts = Counter(f for r in result["replies"] for f in r["failed"])
    print("failures by check:", dict(counts))
    for r in result["replies"]:
        if r["failed"]:
            print(f"  {r['id']}/{r['seed']} {','.join(r['failed'])}: {r['turns'][-1][:30]} -> {r['reply'][:90]!r}")
    print(f"p50 reply {result['p50_s']:.2f} s, {result['tokens_per_reply']:.0f} tokens per reply")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("split", nargs="?", default="all", choices=["tune", "held", "all"])
    ap.add_argument("--messages", choices=["main", "extra"], default="main", help="extra: the second tuning set")
    ap.add_argument("name", nargs="?", default="current", help="result name: chat_quality_NAME.json")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks-dir", type=Path, default=None, help="e.g. a dir with another chat.yaml")
    ap.add_argument("--tag", default=None, help="sentiment tag template, e.g. '[{label}] {text}' (see chat.py)")
    ap.add_argument("--tag-en", default=None, help="the tag template for English messages, when not --tag")
    ap.add_argument("--option", action="append", default=[], help="generation option KEY=VALUE")
    ap.add_argument("--keep-example-order", action="store_true", help="examples in file order, as before d97de9c")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated, instead of SEEDS")
    ap.add_argument("--rescore", action="store_true", help="check the saved replies of NAME again, no model")
    args = ap.parse_args()
    out_path = RESULTS / f"chat_quality_{args.name}.json"
    if args.rescore:
        result = json.loads(out_path.read_text(encoding="utf-8"))
        for r in result["replies"]:
            r["failed"] = list(check_reply(r["turns"][-1], r["reply"], r["finish_reason"], r["sentiment"]).failed)
        result["summary"] = summary(result["replies"])
        finish(result, out_path)
        return
    if args.tag is not None:
        chat.SENTIMENT_TAG = {"zh": args.tag, "en": args.tag_en or args.tag}
    if args.keep_example_order:
        chat.fixed_messages = lambda task, text: task.fixed_messages()
    options: dict[str, Any] = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    service = TaskService(Settings(model=args.model, n_ctx=N_CTX, tasks_dir=args.tasks_dir))
    service.engine  # noqa: B018 - load before timing
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for item in load_items(args.split, EXTRA if args.messages == "extra" else DATA):
        for seed in seeds:
            out = converse(service, item["turns"], seed, options)
            failed = check_reply(item["turns"][-1], out["reply"], out["finish_reason"], item["sentiment"]).failed
            rows.append({**item, "seed": seed, **out, "s": round(out["s"], 3), "failed": list(failed)})
    times = sorted(r["s"] for r in rows)
    result = {
        "name": args.name,
        "model": service.engine.info.model,
        "tag": chat.SENTIMENT_TAG,
        "chat_task": service.task("chat").model_dump(include={"system", "examples", "reply_start", "generation"}),
        "options": options,
        "keep_example_order": args.keep_example_order,
        "seeds": seeds,
        "targets_held": TARGETS,
        "summary": summary(rows),
        "p50_s": times[len(times) // 2],
        "tokens_per_reply": sum(r["tokens"] for r in rows) / len(rows),
        "replies": rows,
    }
    finish(result, out_path)


def finish(result: dict[str, Any], path: Path) -> None:
    print_table(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
