"""Accuracy, macro-F1, per-label precision/recall, confusion matrix and calibration of a classify task."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Metrics", "Prediction", "metrics"]


@dataclass
class Prediction:
    line: int
    gold: str
    label: str
    probabilities: dict[str, float]
    prompt_tokens: int = 0


@dataclass
class Metrics:
    n: int
    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion: dict[str, dict[str, int]]  # gold -> predicted -> count
    ece: float  # expected calibration error of the top probability, 10 equal-width bins
    seconds: float = 0.0
    texts_per_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _ece(preds: Sequence[Prediction], bins: int = 10) -> float:
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum confidence, sum correct
    for p in preds:
        conf = p.probabilities[p.label]
        b = totals[min(bins - 1, int(conf * bins))]
        b[0] += 1
        b[1] += conf
        b[2] += p.label == p.gold
    n = max(1, len(preds))
    return sum(abs(c - k) for count, c, k in totals if count) / n


def metrics(preds: Sequence[Prediction], labels: Iterable[str], seconds: float = 0.0) -> Metrics:
    labels = list(labels)
    confusion = {g: dict.fromkeys(labels, 0) for g in labels}
    for p in preds:
        confusion[p.gold][p.label] += 1
    per_label = {}
    for lab in labels:
        tp = confusion[lab][lab]
        predicted = sum(confusion[g][lab] for g in labels)
        support = sum(confusion[lab].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = len(preds)
    return Metrics(
        n=n,
        accuracy=sum(p.label == p.gold for p in preds) / n if n else 0.0,
        macro_f1=sum(v["f1"] for v in per_label.values()) / len(labels),
        per_label=per_label,
        confusion=confusion,
        ece=_ece(preds),
        seconds=seconds,
        texts_per_s=n / seconds if seconds else 0.0,
    )
