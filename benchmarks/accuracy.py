"""Sentiment accuracy on ChnSentiCorp dev and test and on other domains, with the default model.

One pass per text through the same code as `allinone run sentiment` gives both figures: label scoring
alone (prompt-only) and with the task's optional learned head, which refines the same pass.
Run: .venv/bin/python benchmarks/accuracy.py   (table + benchmarks/results/accuracy.json)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# --- knobs ---------------------------------------------------------------------------------------
SPLITS = ["dev", "test"]  # ChnSentiCorp splits; test is run once per reported configuration
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else None  # first N texts per split (None: all)
PUBLISHED = {
    "claimed prompted Qwen1.5-0.5B (unreproducible)": {"test": 0.893},
    "fine-tuned BERT-base (ymcui/Chinese-BERT-wwm)": {"test": 0.950},
}

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOMAINS = ROOT / "tests" / "data" / "sentiment_domains.jsonl"
OUT = ROOT / "benchmarks" / "results" / "accuracy.json"


def run(service: object, rows: list[dict[str, str]], name: str) -> dict[str, object]:
    from tqdm import tqdm

    right = {"prompt": 0, "head": 0}
    start = time.perf_counter()
    for row in tqdm(rows, desc=name, file=sys.stderr):
        r = service.classify("sentiment", row["text"])  # type: ignore[attr-defined]
        prompt_probs = r.prompt_probabilities or r.probabilities
        right["prompt"] += max(prompt_probs, key=prompt_probs.__getitem__) == row["label"]
        right["head"] += r.label == row["label"]
    secs = time.perf_counter() - start
    n = len(rows)
    return {"n": n, "prompt_only": right["prompt"] / n, "with_head": right["head"] / n, "texts_per_s": n / secs}


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.open(encoding="utf-8")][:LIMIT]


def main() -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    service = TaskService(Settings(use_heads=True))  # one pass gives both: label scoring alone, and with the head
    task = service.task("sentiment")
    has_head = task.head is not None
    results: dict[str, object] = {"task": task.model_dump(mode="json"), "has_head": has_head}
    for split in SPLITS:
        results[split] = run(service, load(DATA / f"chnsenticorp_{split}.jsonl"), split)
    domain_rows = load(DOMAINS)
    results["domains"] = {
        d: run(service, [r for r in domain_rows if r["domain"] == d], d)
        for d in sorted({r["domain"] for r in domain_rows})
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n")

    def pct(x: object) -> str:
        return f"{100 * float(x):.1f}%" if x is not None else "-"  # type: ignore[arg-type]

    print("| system | ChnSentiCorp dev | ChnSentiCorp test | texts/s |\n|---|---|---|---|")
    dev, test = results["dev"], results["test"]  # type: ignore[index]
    print(
        f"| this project, prompt-only | {pct(dev['prompt_only'])} | {pct(test['prompt_only'])} | "
        f"{test['texts_per_s']:.1f} |"
    )
    if has_head:
        print(
            f"| this project, prompt + learned head | {pct(dev['with_head'])} | {pct(test['with_head'])} | "
            f"{test['texts_per_s']:.1f} |"
        )
    for name, figures in PUBLISHED.items():
        print(f"| {name} | - | {pct(figures['test'])} | - |")
    print("\n| other domains (48 texts written for the tests) | prompt-only | with head |\n|---|---|---|")
    for d, r in results["domains"].items():  # type: ignore[attr-defined]
        print(f"| {d} ({r['n']}) | {pct(r['prompt_only'])} | {pct(r['with_head']) if has_head else '-'} |")
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
