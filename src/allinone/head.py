"""An optional learned head: logistic regression on the hidden state the scoring pass already computes.

Features are the standardized final hidden state at the answer position plus the prompt's label
log-scores, so the head refines the prompt's answer instead of replacing it. Stored as a small JSON
file beside the task YAML and trained by `allinone train-head TASK FILE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TaskDefinitionError

__all__ = ["LinearHead", "train_head"]

Array = np.ndarray[Any, np.dtype[np.float64]]


@dataclass
class LinearHead:
    labels: list[str]
    mean: Array  # per-feature mean and scale of the training features
    scale: Array
    weight: Array  # (labels, features)
    bias: Array  # (labels,)
    info: dict[str, Any]

    @property
    def probe_layer(self) -> int | None:
        """The hidden-state features it was trained on (Engine.probe_layer); None: the final hidden state."""
        layer = self.info.get("probe_layer")
        return int(layer) if layer is not None else None

    def probabilities(self, hidden: list[float], label_scores: list[float]) -> dict[str, float]:
        x = (np.asarray([*hidden, *label_scores]) - self.mean) / self.scale
        z = self.weight @ x + self.bias
        p = np.exp(z - z.max())
        p /= p.sum()
        return {label: float(v) for label, v in zip(self.labels, p, strict=True)}

    def save(self, path: Path) -> None:
        data = {
            "format": "allinone-linear-head/1",
            "labels": self.labels,
            "mean": self.mean.round(6).tolist(),
            "scale": self.scale.round(6).tolist(),
            "weight": self.weight.round(6).tolist(),
            "bias": self.bias.round(6).tolist(),
            "info": self.info,
        }
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            head = cls(
                list(data["labels"]),
                np.asarray(data["mean"], dtype=np.float64),
                np.asarray(data["scale"], dtype=np.float64),
                np.asarray(data["weight"], dtype=np.float64),
                np.asarray(data["bias"], dtype=np.float64),
                dict(data.get("info", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TaskDefinitionError(f"{path}: not a readable head file ({e})") from None
        if head.weight.shape != (len(head.labels), len(head.mean)) or head.mean.shape != head.scale.shape:
            raise TaskDefinitionError(f"{path}: head shapes do not match")
        return head


def train_head(
    features: list[list[float]], golds: list[str], labels: list[str], l2: float = 1.0, steps: int = 500
) -> LinearHead:
    """Multinomial logistic regression by full-batch gradient descent (Adam) with an L2 penalty."""
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    y = np.zeros((len(golds), len(labels)))
    y[np.arange(len(golds)), [labels.index(g) for g in golds]] = 1.0
    w, b = np.zeros((len(labels), x.shape[1])), np.zeros(len(labels))
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    lr, beta1, beta2, n = 0.05, 0.9, 0.999, len(golds)
    for t in range(1, steps + 1):
        z = x @ w.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        gw = (p - y).T @ x / n + l2 * w / n
        gb = (p - y).mean(axis=0)
        mw, vw = beta1 * mw + (1 - beta1) * gw, beta2 * vw + (1 - beta2) * gw**2
        mb, vb = beta1 * mb + (1 - beta1) * gb, beta2 * vb + (1 - beta2) * gb**2
        w -= lr * (mw / (1 - beta1**t)) / (np.sqrt(vw / (1 - beta2**t)) + 1e-8)
        b -= lr * (mb / (1 - beta1**t)) / (np.sqrt(vb / (1 - beta2**t)) + 1e-8)
    train_acc = float(((x @ w.T + b).argmax(axis=1) == y.argmax(axis=1)).mean())
    return LinearHead(labels, mean, scale, w, b, {"n_train": n, "train_accuracy": round(train_acc, 4), "l2": l2})
