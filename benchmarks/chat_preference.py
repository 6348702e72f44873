"""Which of two chat configurations' replies a judge model prefers, reply by reply, and how often it agrees with us.

Run: ALLINONE_N_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/chat_preference.py A B [--judge REF] [--split S]
(A and B name results of benchmarks/chat_quality.py, e.g. `before` and `current`; prints B's win rate per split and
language, and the agreement with the hand labels; writes benchmarks/results/chat_preference_A_vs_B_JUDGE.json)

The judge (allinone.judge) scores the tokens "1" and "2" after a judging prompt, with the two replies in both orders,
so a reply's position cannot decide. Hand labels (benchmarks/data/chat_preference_labels_A_vs_B.jsonl, the held-out
half's seed-1 pairs) were written blind: the pairs shown as A/B in a shuffled order without the configuration names
(`--export-blind FILE` writes such a file). `--rescore` recomputes the agreement of a saved result with its labels.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from allinone.judge import prefer
from allinone.service import TaskService
from allinone.settings import Settings

# --- knobs ---------------------------------------------------------------------------------------
N_CTX = 4096
BLIND_SEED = 14  # which configuration is shown as A in the blind labelling file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / "data"


def labels_path(a: str, b: str) -> Path:
    return DATA / f"chat_preference_labels_{a}_vs_{b}.jsonl"


def load(name: str) -> dict[tuple[str, int], dict[str, Any]]:
    result = json.loads((RESULTS / f"chat_quality_{name}.json").read_text(encoding="utf-8"))
    return {(r["id"], r["seed"]): r for r in result["replies"]}


def pairs(a: str, b: str, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    ra, rb = load(a), load(b)
    keys = [k for k in ra if k in rb and split in ("all", ra[k]["split"])]
    return [(ra[k], rb[k]) for k in keys]


def export_blind(items: list[tuple[dict[str, Any], dict[str, Any]]], path: Path) -> None:
    """The pairs with the configurations hidden behind a shuffled A/B, for labelling by hand."""
    rng = random.Random(BLIND_SEED)
    with path.open("w", encoding="utf-8") as f:
        for ra, rb in items:
            swap = rng.random() < 0.5
            first, second = (rb, ra) if swap else (ra, rb)
            row = {"id": ra["id"], "seed": ra["seed"], "b_is": "A" if swap else "B", "history": ra["turns"][:-1]}
            row |= {"message": ra["turns"][-1], "A": first["reply"], "B": second["reply"], "mine": ""}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def agreement(judged: list[dict[str, Any]], labels: Path) -> dict[str, Any]:
    """How often the judge's verdict matches the hand label, on pairs where the hand label is not a tie."""
    if not labels.is_file():
        return {}
    mine = {}
    for line in labels.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row["mine"] in ("A", "B"):
                mine[(row["id"], row["seed"])] = "b" if row["mine"] == row["b_is"] else "a"
    both = [j for j in judged if (j["id"], j["seed"]) in mine and j["verdict"] != "tie"]
    agree = sum(j["verdict"] == mine[(j["id"], j["seed"])] for j in both)
    b_mine = sum(v == "b" for v in mine.values())
    return {
        "labelled": len(mine),
        "compared": len(both),
        "agree": agree,
        "rate": round(agree / max(1, len(both)), 4),
        "hand_b_wins": b_mine,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--judge", default="default", help="model reference of the judge")
    ap.add_argument("--split", default="held", choices=["tune", "held", "all"])
    ap.add_argument("--export-blind", type=Path, default=None, help="write the blind labelling file and stop")
    ap.add_argument("--rescore", type=Path, default=None, help="a saved result: recompute its agreement, no model")
    args = ap.parse_args()
    if args.rescore:
        result = json.loads(args.rescore.read_text(encoding="utf-8"))
        result["agreement_with_hand_labels"] = agreement(result["pairs"], labels_path(args.a, args.b))
        args.rescore.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"agreement with hand labels: {result['agreement_with_hand_labels']}")
        return
    items = pairs(args.a, args.b, args.split)
    if args.export_blind:
        export_blind(items, args.export_blind)
        print(f"wrote {len(items)} blind pairs to {args.export_blind}")
        return
    service = TaskService(Settings(model=args.judge, n_ctx=N_CTX))
    judged = []
    for ra, rb in items:
        p = prefer(service.engine, ra["turns"][-1], ra["reply"], rb["reply"])
        judged.append(
            {
                "id": ra["id"],
                "seed": ra["seed"],
                "lang": ra["lang"],
                "p_b": round(1 - p.p_a, 4),
                "consistent": p.consistent,
                "verdict": p.verdict,
            }
        )
    decided = [j for j in judged if j["verdict"] != "tie"]
    result: dict[str, Any] = {"a": args.a, "b": args.b, "judge": service.engine.info.model, "split": args.split}
    for lang in ("all", "zh", "en"):
        part = [j for j in decided if lang in ("all", j["lang"])]
        wins = sum(j["verdict"] == "b" for j in part)
        result[lang] = {
            "pairs": len(part),
            "b_wins": wins,
            "b_win_rate": round(wins / max(1, len(part)), 4),
            "mean_p_b": round(sum(j["p_b"] for j in part) / max(1, len(part)), 4),
            "consistent": round(sum(j["consistent"] for j in part) / max(1, len(part)), 4),
        }
    result["ties"] = len(judged) - len(decided)
    result["agreement_with_hand_labels"] = agreement(judged, labels_path(args.a, args.b))
    result["pairs"] = judged
    for lang in ("all", "zh", "en"):
        s = result[lang]
        print(
            f"{lang:<4} {args.b} preferred in {s['b_wins']}/{s['pairs']} ({100 * s['b_win_rate']:.1f}%), "
            f"mean P {s['mean_p_b']:.3f}, both orders agree {100 * s['consistent']:.0f}%"
        )
    print(f"ties (identical replies): {result['ties']}")
    if result["agreement_with_hand_labels"]:
        a = result["agreement_with_hand_labels"]
        print(f"agreement with hand labels: {a['agree']}/{a['compared']} ({100 * a['rate']:.1f}%)")
    judge = Path(result["judge"]).stem.replace("qwen2.5-coder-", "").replace("-instruct-q4_k_m", "")
    out = RESULTS / f"chat_preference_{args.a}_vs_{args.b}_{judge}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
