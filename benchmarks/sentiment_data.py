"""Build the sentiment head's training mix and the out-of-domain held-out sets from public labelled data.

Sources (see benchmarks/data/README.md for licences): ChnSentiCorp train and Weibo from ../shared/data; the
UCI "sentiment labelled sentences" (Kotzias et al., KDD 2015: Amazon, Yelp and IMDB sentences) and Douban
movie reviews with their star ratings (DMR-Dataset), read from git snapshots of the public repositories
below at pinned commits. Nothing here comes from waimai_10k, online_shopping_10_cats or SST-2 (or Rotten
Tomatoes, SST-2's source), which the team keeps for its own checks.

Run: python benchmarks/sentiment_data.py UCI_GIT_DIR DMR_GIT_DIR [OUT_DIR]   (default: ../data/sentiment)
Writes one JSONL per set: {"text", "label": positive|negative, "domain"}; prints rows and sha256 of each file.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

# --- knobs ---------------------------------------------------------------------------------------
UCI_COMMIT = "9642488481140b1697ff2dea5637596c4cd43c69"  # omarsar/dm_2018_hw_1, the UCI files as published
DMR_COMMIT = "100c7e2"  # yiyepianzhounc/DMR-Dataset-1 reviews.json
N_CHNSENTICORP = 2000  # train texts not in dev/test, in file order
N_CHNSENTICORP_MORE = 2000  # the next ones: a mix weighted toward ChnSentiCorp (head_choice.py's "mix+csc")
# train_chnsenticorp_rest: every other train text (deduplicated), for the mix with all of ChnSentiCorp ("mix+csc_all")
N_WEIBO_TRAIN = 1000  # of weibo_train.jsonl after a seeded shuffle; the rest is held out
SEED = 16

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

Row = dict[str, str]


def git_show(git_dir: Path, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def uci(git_dir: Path, name: str, domain: str) -> list[Row]:
    """One UCI file: 'sentence<TAB>0|1' a line."""
    text = git_show(git_dir, UCI_COMMIT, f"sentiment labelled sentences/{name}_labelled.txt")
    rows = []
    for line in text.splitlines():
        sentence, _, score = line.rpartition("\t")
        if sentence.strip() and score.strip() in ("0", "1"):
            rows.append({"text": sentence.strip(), "label": "positive" if score.strip() == "1" else "negative"})
    return [{**r, "domain": domain} for r in rows]


def douban(git_dir: Path) -> list[Row]:
    """Douban movie reviews (each sampled review and its author's earlier ones): 4-5 stars positive, 1-2 negative."""
    data = json.loads(git_show(git_dir, DMR_COMMIT, "reviews.json"))
    stars: dict[str, float] = {}
    for review in data.values():
        for r in [review, *review["user_reviews"].values()]:
            stars.setdefault(r["text"].strip(), float(r["stars"]))
    rows = [{"text": t, "label": "positive" if s >= 4 else "negative"} for t, s in stars.items() if s != 3 and t]
    return [{**r, "domain": "zh_movies"} for r in rows]


def shared(name: str) -> list[Row]:
    return [json.loads(line) for line in (SHARED / name).open(encoding="utf-8")]


def build(uci_dir: Path, dmr_dir: Path) -> dict[str, list[Row]]:
    held = {r["text"] for split in ("dev", "test") for r in shared(f"chnsenticorp_{split}.jsonl")}
    csc = [r for r in shared("chnsenticorp_train.jsonl") if r["text"] not in held]
    seen = {r["text"] for r in csc[:N_CHNSENTICORP]}
    more: list[Row] = []
    rest: list[Row] = []
    for r in csc[N_CHNSENTICORP:]:  # the file repeats some texts
        if r["text"] not in seen:
            seen.add(r["text"])
            (more if len(more) < N_CHNSENTICORP_MORE else rest).append(r)
    weibo = shared("weibo_train.jsonl")
    random.Random(SEED).shuffle(weibo)  # the file is sorted by label
    return {
        "train_chnsenticorp": [{**r, "domain": "chnsenticorp"} for r in csc[:N_CHNSENTICORP]],
        "train_chnsenticorp_more": [{**r, "domain": "chnsenticorp"} for r in more],
        "train_chnsenticorp_rest": [{**r, "domain": "chnsenticorp"} for r in rest],
        "train_weibo": [{**r, "domain": "zh_social"} for r in weibo[:N_WEIBO_TRAIN]],
        "train_amazon": uci(uci_dir, "amazon_cells", "en_products"),
        "heldout_en_movies": uci(uci_dir, "imdb", "en_movies"),
        "heldout_en_restaurants": uci(uci_dir, "yelp", "en_restaurants"),
        "heldout_zh_social": [{**r, "domain": "zh_social"} for r in weibo[N_WEIBO_TRAIN:]],
        "heldout_zh_movies": douban(dmr_dir),
    }


def main() -> None:
    uci_dir, dmr_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT.parent / "data" / "sentiment"
    out.mkdir(parents=True, exist_ok=True)
    sets = build(uci_dir, dmr_dir)
    seen: set[str] = set()
    for name, rows in sets.items():
        overlap = sum(r["text"] in seen for r in rows)
        seen |= {r["text"] for r in rows}
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        (out / f"{name}.jsonl").write_bytes(data)
        pos = sum(r["label"] == "positive" for r in rows)
        sha = hashlib.sha256(data).hexdigest()[:16]
        print(f"{name:<24}{len(rows):>6} rows  {pos:>5} positive  {overlap:>3} in earlier sets  sha256 {sha}")


if __name__ == "__main__":
    main()
