"""Classification by label scoring: every label's verbaliser words are scored after the prompt."""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engines.base import Conversation, Engine, Scores, Scoring, Usage
from .errors import EmptyText, InvalidInput, TaskDefinitionError
from .head import LinearHead
from .tasks import Task

__all__ = ["Classification", "classify", "classify_many", "require_text"]


@dataclass
class Classification:
    task: str
    label: str  # always one of the task's label ids
    display: str  # e.g. "😄 LLM 情感判断: 正面"
    probabilities: dict[str, float]  # softmax over the label set, in declared order
    usage: Usage = field(default_factory=Usage)
    truncated: bool = False
    method: str = "prompt"  # "prompt" (label scoring) or "prompt+head" (a learned head refined it)
    prompt_probabilities: dict[str, float] | None = None  # label scoring alone, when a head was used
    scoring: Scoring = "exact"  # how the engine scored the labels (engines.base.Scores.scoring)


def require_text(text: str) -> str:
    """The text, unless it is empty or only whitespace (EmptyText: a 400 in both languages)."""
    if not text or not text.strip():
        raise EmptyText()
    return text


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def label_scores(task: Task, word_logprobs: list[float]) -> list[float]:
    """Each label's log-score: the log-sum-exp of its verbaliser words' log-probabilities."""
    assert task.labels is not None
    scores, i = [], 0
    for label in task.labels:
        scores.append(_logsumexp(word_logprobs[i : i + len(label.words)]))
        i += len(label.words)
    return scores


def _softmax(task: Task, scores: list[float]) -> dict[str, float]:
    assert task.labels is not None
    z = _logsumexp(scores)
    return {label.id: math.exp(s - z) for label, s in zip(task.labels, scores, strict=True)}


def label_probabilities(task: Task, word_logprobs: list[float], bias: list[float] | None = None) -> dict[str, float]:
    """Softmax over labels, after dividing out a calibration bias (log-probabilities per label)."""
    scores = label_scores(task, word_logprobs)
    if bias is not None:
        scores = [s - b for s, b in zip(scores, bias, strict=True)]
    return _softmax(task, scores)


def display_line(task: Task, label_id: str) -> str:
    label = task.label(label_id)
    return task.display_template.format(emoji=label.emoji, display=label.display, id=label.id).strip()


def score_words(engine: Engine, task: Task, text: str, hidden: bool = False) -> Scores:
    """One pass of the task's prompt over `text`: every verbaliser word's log-probability."""
    assert task.labels is not None
    return engine.score(conversation(task, text), [w for label in task.labels for w in label.words], hidden=hidden)


def conversation(task: Task, text: str) -> Conversation:
    """The task's fixed messages, then the text as the user's message."""
    fixed = task.fixed_messages()
    return Conversation.of([*fixed, task.user_message(text)], len(fixed))


_heads: dict[tuple[Path, int], LinearHead] = {}


def load_head(task: Task) -> LinearHead | None:
    path = task.head_path
    if path is None:
        return None
    key = (path, path.stat().st_mtime_ns)
    if key not in _heads:
        head = LinearHead.load(path)
        if head.labels != [label.id for label in task.labels or []]:
            raise TaskDefinitionError(f"{path}: head labels {head.labels} do not match task '{task.name}'")
        if len(head.mean) < len(task.labels or []):
            raise TaskDefinitionError(f"{path}: head has fewer features than labels")
        _heads[key] = head
    return _heads[key]


def usable_head(engine: Engine, task: Task) -> LinearHead | None:
    """The task's learned head if this engine can feed it: the model it was trained on, probing its layer.

    Heads are on by default, so another model or an engine without hidden states (openai) gets the
    prompt's answer instead of an error; `Classification.method` says which was given.
    """
    head = load_head(task)
    if head is None or head.probe_layer != engine.probe_layer:
        return None
    return head if head.info.get("model", engine.info.model) == engine.info.model else None


_biases: weakref.WeakKeyDictionary[Engine, dict[str, list[float]]] = weakref.WeakKeyDictionary()
_bias_lock = threading.Lock()


def calibration_bias(engine: Engine, task: Task) -> list[float] | None:
    """The task's label bias on content-free inputs (mean label log-probability), measured once per engine."""
    if task.calibration is None:
        return None
    key = task.model_dump_json()
    with _bias_lock:
        cached = _biases.setdefault(engine, {}).get(key)
    if cached is not None:
        return cached
    probs = [
        _softmax(task, label_scores(task, score_words(engine, task, t).logprobs)) for t in task.calibration.content_free
    ]
    assert task.labels is not None
    bias = [math.log(sum(p[label.id] for p in probs) / len(probs)) for label in task.labels]
    with _bias_lock:
        _biases[engine][key] = bias
    return bias


def classify(engine: Engine, task: Task, text: str, use_head: bool = False) -> Classification:
    """Score every label of a classify task for one text (one forward pass)."""
    if task.kind != "classify" or task.labels is None:
        raise InvalidInput(f"task '{task.name}' is not a classify task")
    text, truncated = task.truncation.apply(text, engine.count_tokens)
    head = usable_head(engine, task) if use_head else None
    return _result(task, score_words(engine, task, text, hidden=head is not None), truncated, engine, head)


def classify_many(engine: Engine, task: Task, texts: Sequence[str], use_head: bool = False) -> list[Classification]:
    """`classify` for several texts, which the engine may score as one batch (faster for bulk work).

    Batched scores can differ from one-at-a-time scores in the last bits (see Engine.score_batch); a learned
    head gets each text's hidden state from the batch it ran in.
    """
    if task.kind != "classify" or task.labels is None:
        raise InvalidInput(f"task '{task.name}' is not a classify task")
    if len(texts) < 2:
        return [classify(engine, task, require_text(t), use_head) for t in texts]
    head = usable_head(engine, task) if use_head else None
    cut = [task.truncation.apply(require_text(t), engine.count_tokens) for t in texts]
    words = [w for label in task.labels for w in label.words]
    scores = engine.score_batch([conversation(task, t) for t, _ in cut], words, hidden=head is not None)
    return [_result(task, s, truncated, engine, head) for s, (_, truncated) in zip(scores, cut, strict=True)]


def _result(task: Task, scores: Scores, truncated: bool, engine: Engine, head: LinearHead | None) -> Classification:
    bias = calibration_bias(engine, task)
    probs = label_probabilities(task, scores.logprobs, bias)
    result = Classification(task.name, "", "", probs, scores.usage, truncated, scoring=scores.scoring)
    if head is not None and scores.hidden is not None:
        result.prompt_probabilities = probs
        result.probabilities = head.answer(scores.hidden, label_scores(task, scores.logprobs), probs)
        result.method = "prompt+head"
    result.label = max(result.probabilities, key=result.probabilities.__getitem__)
    result.display = display_line(task, result.label)
    return result
