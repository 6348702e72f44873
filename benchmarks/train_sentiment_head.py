"""Write the shipped sentiment head (src/allinone/tasks/builtin/sentiment.head.json) with the recipe chosen by
benchmarks/head_choice.py, from the features head_features.py cached for the task's prompt.

The cached features are those the engine returns with the head's probe layer (the same code path, several
layers read at once), so this equals `allinone train-head` on the same texts without a second hour of passes.
Run: python benchmarks/train_sentiment_head.py
"""

from __future__ import annotations

from pathlib import Path

from head_choice import TRAIN, stack

# --- knobs: the recipe chosen on dev and the held-out domains (benchmarks/results/head_choice.json) -------
# The mix with every ChnSentiCorp train text (ChnSentiCorp 7,656, Weibo 1,000, Amazon English 1,000); the mean after
# layer 12 and the final state, plus the label scores, which are not penalised. It is the best on dev (89.7) of the
# variants that lose nothing on any held-out domain (worst change 0.0 points). The previous head (twice the
# ChnSentiCorp texts of the first mix, the mean after layer 18) gave 88.5 on dev and 89.4 on ChnSentiCorp test.
# Mixing and gating, learned leave-one-domain-out, chose the prompt's answer alone, so they are off.
TRAIN_SET = "mix+csc_all"
FEATURES = "mean12+final"
L2 = 300.0
FREE = 2  # label scores unpenalised: regularised toward the prompt's answer
MIX = 1.0  # weight of the head's probabilities against the prompt's
GATE = 0.5  # the head answers where its top probability reaches this

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "allinone" / "tasks" / "builtin" / "sentiment.head.json"


def main() -> None:
    from allinone.head import train_head
    from allinone.models import DEFAULT

    names = TRAIN[TRAIN_SET]
    x, _, y = stack(names, FEATURES)
    labels = ["positive", "negative"]
    head = train_head(x.tolist(), [labels[1 - v] for v in y], labels, l2=L2, free=FREE)
    layer = next((int(p.removeprefix("mean")) for p in FEATURES.split("+") if p.startswith("mean")), None)
    head.info.update(
        {
            "task": "sentiment",
            "files": [f"{n}.jsonl" for n in names],
            "model": DEFAULT.name,
            "probe_layer": layer,
            "features": FEATURES,
            "mix": MIX,
            "gate": GATE,
            "recipe": "benchmarks/train_sentiment_head.py",
        }
    )
    head.save(OUT)
    print(f"trained on {head.info['n_train']} texts (train accuracy {head.info['train_accuracy']}); wrote {OUT}")


if __name__ == "__main__":
    main()
