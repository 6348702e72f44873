"""Classification by label scoring: every label's verbaliser words are scored after the prompt."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .engines.base import Engine, Usage
from .errors import InvalidInput
from .tasks import Task

__all__ = ["Classification", "classify", "require_text"]


@dataclass
class Classification:
    task: str
    label: str  # always one of the task's label ids
    display: str  # e.g. "😄 LLM 情感判断: 正面"
    probabilities: dict[str, float]  # softmax over the label set, in declared order
    usage: Usage = field(default_factory=Usage)
    truncated: bool = False


def require_text(text: str) -> str:
    if not text or not text.strip():
        raise InvalidInput("empty text: please enter some text / 请输入文本")
    return text


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def label_probabilities(task: Task, word_logprobs: list[float]) -> dict[str, float]:
    """Pool each label's words (log-sum-exp), then softmax over labels."""
    assert task.labels is not None
    scores, i = [], 0
    for label in task.labels:
        scores.append(_logsumexp(word_logprobs[i : i + len(label.words)]))
        i += len(label.words)
    z = _logsumexp(scores)
    return {label.id: math.exp(s - z) for label, s in zip(task.labels, scores, strict=True)}


def display_line(task: Task, label_id: str) -> str:
    label = task.label(label_id)
    return task.display_template.format(emoji=label.emoji, display=label.display, id=label.id).strip()


def classify(engine: Engine, task: Task, text: str) -> Classification:
    """Score every label of a classify task for one text."""
    if task.kind != "classify" or task.labels is None:
        raise InvalidInput(f"task '{task.name}' is not a classify task")
    text, truncated = task.truncation.apply(require_text(text))
    fixed = task.fixed_messages()
    prompt = engine.render([*fixed, task.user_message(text)], n_fixed=len(fixed))
    words = [w for label in task.labels for w in label.words]
    scores = engine.score(prompt, words)
    probs = label_probabilities(task, scores.logprobs)
    best = max(probs, key=probs.__getitem__)
    return Classification(task.name, best, display_line(task, best), probs, scores.usage, truncated)
