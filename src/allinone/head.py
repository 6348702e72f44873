"""An optional learned head: logistic regression on the hidden state the scoring pass already computes.

Features are standardized hidden states of the scoring pass (the final one at the answer position, the mean
after a layer over the text's own tokens, or both: `info["features"]`) plus the prompt's label log-scores, so
the head refines the prompt's answer instead of replacing it. Stored as a small JSON
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

    @property
    def uses_final(self) -> bool:
        """Whether the final hidden state is one of its features ("meanL+final", "final"); a head on a layer's
        mean alone ("meanL") leaves it out."""
        return "final" in str(self.info.get("features", "final")).split("+")

    def probabilities(self, hidden: list[float], label_scores: list[float]) -> dict[str, float]:
        if self.probe_layer is not None and not self.uses_final:
            hidden = hidden[: len(hidden) // 2]  # the engine gives the layer's mean, then the final state
        x = (np.asarray([*hidden, *label_scores]) - self.mean) / self.scale
        z = self.weight @ x + self.bias
        p = np.exp(z - z.max())
        p /= p.sum()
        return {label: float(v) for label, v in zip(self.labels, p, strict=True)}

    @property
    def mix(self) -> float:
        """Weight of the head's probabilities against the prompt's (1: the head alone)."""
        return float(self.info.get("mix", 1.0))

    @property
    def gate(self) -> float:
        """The head answers only where its top probability reaches this; elsewhere the prompt does."""
        return float(self.info.get("gate", 0.0))

    def answer(self, hidden: list[float], label_scores: list[float], prompt: dict[str, float]) -> dict[str, float]:
        """The head's probabilities mixed with the prompt's (`mix`), where the head is confident (`gate`)."""
        own = self.probabilities(hidden, label_scores)
        if max(own.values()) < self.gate:
            return prompt
        return {k: self.mix * own[k] + (1 - self.mix) * prompt[k] for k in own}

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


def _newton(x: Array, y: Array, l2: float, free: int = 0, iters: int = 50) -> tuple[Array, float]:
    """L2-penalised binary logistic regression by Newton's method; the bias and the last `free` weights are
    not penalised."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[d - free :] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-8)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-7:
            break
    return w[:-1], float(w[-1])


def train_head(
    features: list[list[float]], golds: list[str], labels: list[str], l2: float = 1.0, free: int = 0
) -> LinearHead:
    """Logistic regression on standardized features with an L2 penalty, solved exactly (Newton's method).

    `free`: the last features (the prompt's label scores) are not penalised, so a strong penalty shrinks the
    head toward the prompt's own answer (recalibrated) rather than toward a constant.

    Two labels: one binary model, split as +z/2 and -z/2 so the softmax is its sigmoid. More labels: one
    model per label against the rest, softmax over their scores.
    """
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    gold = np.asarray([labels.index(g) for g in golds])
    if len(labels) == 2:
        w, b = _newton(x, (gold == 0).astype(np.float64), l2, free)
        weight, bias = np.stack([w / 2, -w / 2]), np.asarray([b / 2, -b / 2])
    else:
        fits = [_newton(x, (gold == k).astype(np.float64), l2, free) for k in range(len(labels))]
        weight, bias = np.stack([w for w, _ in fits]), np.asarray([b for _, b in fits])
    train_acc = float(((x @ weight.T + bias).argmax(axis=1) == gold).mean())
    return LinearHead(
        labels,
        mean,
        scale,
        weight,
        bias,
        {"n_train": len(golds), "train_accuracy": round(train_acc, 4), "l2": l2, "free": free},
    )
