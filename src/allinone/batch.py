"""Bulk work on a JSONL/CSV file of texts: evaluate a classify task, label every row (resumably), train a head.

The CLI's `eval`, `classify` and `train-head` and the Python API's `evaluate`, `classify_file` and `train_head`
are thin wrappers over these functions; progress goes to an optional bar factory (the CLI passes tqdm).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from .classify import label_scores, score_words
from .dataset import Row, count_rows, label_lookup, read_rows
from .errors import InvalidInput
from .evaluate import Metrics, Prediction, metrics
from .head import LinearHead, train_head
from .service import TaskService
from .tasks import Task

__all__ = [
    "Evaluation",
    "FileResult",
    "classify_file",
    "completed_rows",
    "evaluate",
    "head_features",
    "labelled_rows",
    "train_head_on_file",
]


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...


Progress = Callable[[int, str], AbstractContextManager[Bar]]  # (total, description) -> a bar


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


def _no_progress(total: int, desc: str) -> AbstractContextManager[Bar]:
    return nullcontext(_Silent())


@dataclass
class Evaluation:
    metrics: Metrics
    predictions: list[Prediction] = field(default_factory=list)

    def save(self, output: Path) -> tuple[Path, Path]:
        """Write metrics.json and predictions.jsonl into `output`; their paths."""
        output.mkdir(parents=True, exist_ok=True)
        metrics_file, predictions_file = output / "metrics.json", output / "predictions.jsonl"
        metrics_file.write_text(json.dumps(asdict(self.metrics), ensure_ascii=False, indent=2) + "\n")
        with predictions_file.open("w", encoding="utf-8") as f:
            for p in self.predictions:
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        return metrics_file, predictions_file


@dataclass
class FileResult:
    total: int  # rows the output holds when done
    resumed_from: int  # rows an earlier run had already written

    @property
    def already_done(self) -> bool:
        return self.resumed_from >= self.total


def labelled_rows(
    task: Task,
    file: Path,
    text_field: str = "text",
    label_field: str = "label",
    label_map: Mapping[str, str] | None = None,
    limit: int | None = None,
    exclude: Iterable[Path] = (),
) -> list[Row]:
    """Every labelled row (checked before any model work), minus texts that occur in `exclude` files."""
    held_out = {row.text for path in exclude for row in read_rows(path, text_field)}
    rows = read_rows(file, text_field, label_field, label_lookup(task, label_map))
    return list(islice((r for r in rows if r.text not in held_out), limit))


def evaluate(
    service: TaskService,
    task: str,
    file: Path,
    text_field: str = "text",
    label_field: str = "label",
    label_map: Mapping[str, str] | None = None,
    limit: int | None = None,
    progress: Progress = _no_progress,
) -> Evaluation:
    """A classify task's metrics on a labelled file, and each row's prediction."""
    t = service.task(task, "classify")
    rows = labelled_rows(t, file, text_field, label_field, label_map, limit)
    service.engine  # noqa: B018 - load first: the speed measured is the texts' alone
    preds = []
    start = time.perf_counter()
    with progress(len(rows), f"eval {task}") as bar:
        step = service.settings.batch_size
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            for row, r in zip(chunk, service.classify_many(task, [row.text for row in chunk]), strict=True):
                preds.append(Prediction(row.line, row.label or "", r.label, r.probabilities, r.usage.prompt_tokens))
            bar.update(len(chunk))
    m = metrics(preds, [lb.id for lb in t.labels or []], time.perf_counter() - start)
    m.extra = {"task": task, "file": str(file), "model": service.engine.info.model}
    return Evaluation(m, preds)


def completed_rows(out: Path) -> int:
    """Rows already written by an earlier run; a half-written last line is cut off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with out.open("r+b") as f:
            f.truncate(keep)
    n = data[:keep].count(b"\n")
    return max(0, n - 1) if out.suffix.lower() == ".csv" else n


def classify_file(
    service: TaskService,
    task: str,
    file: Path,
    out: Path,
    text_field: str = "text",
    limit: int | None = None,
    progress: Progress = _no_progress,
) -> FileResult:
    """Label every row of `file` into `out` (.jsonl or .csv: each row plus predicted_label and probabilities);
    a rerun resumes after the rows already in `out`."""
    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise InvalidInput(f"the output must end in .jsonl or .csv: {out}")
    label_ids = [lb.id for lb in service.task(task, "classify").labels or []]
    total = count_rows(file) if limit is None else min(limit, count_rows(file))
    done = completed_rows(out)
    if done >= total:
        return FileResult(total, done)
    service.engine  # noqa: B018
    with out.open("a", encoding="utf-8", newline="") as f, progress(total, f"classify {task}") as bar:
        bar.update(done)
        writer = None
        rows = islice(read_rows(file, text_field), done, limit)
        while chunk := list(islice(rows, service.settings.batch_size)):  # constant memory: one batch at a time
            for row, r in zip(chunk, service.classify_many(task, [row.text for row in chunk]), strict=True):
                if out.suffix.lower() == ".jsonl":
                    record = {**row.data, "predicted_label": r.label, "probabilities": r.probabilities}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                else:
                    if writer is None:
                        fields = [*row.data, "predicted_label", *(f"p_{lab}" for lab in label_ids)]
                        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                        if done == 0:
                            writer.writeheader()
                    writer.writerow(
                        {**row.data, "predicted_label": r.label, **{f"p_{k}": v for k, v in r.probabilities.items()}}
                    )
            f.flush()  # a killed run loses at most the batch being scored
            bar.update(len(chunk))
    return FileResult(total, done)


def head_features(
    service: TaskService, task: Task, rows: list[Row], progress: Progress = _no_progress
) -> list[list[float]]:
    """Each row's head features: the engine's hidden-state features, then the prompt's label log-scores."""
    features = []
    with progress(len(rows), f"features {task.name}") as bar:
        for row in rows:
            text = task.truncation.apply(row.text, service.engine.count_tokens)[0]
            scores = score_words(service.engine, task, text, hidden=True)
            assert scores.hidden is not None
            features.append([*scores.hidden, *label_scores(task, scores.logprobs)])
            bar.update()
    return features


def train_head_on_file(
    service: TaskService,
    task: str,
    file: Path,
    output: Path,
    text_field: str = "text",
    label_field: str = "label",
    label_map: Mapping[str, str] | None = None,
    limit: int | None = None,
    exclude: Iterable[Path] = (),
    l2: float = 300.0,
    progress: Progress = _no_progress,
) -> LinearHead:
    """Train a classify task's linear head on a labelled file (minus texts in `exclude` files) and save it to
    `output`; the features are those of the service's engine (its probe layer, if any)."""
    exclude = list(exclude)
    t = service.task(task, "classify")
    rows = labelled_rows(t, file, text_field, label_field, label_map, limit, exclude)
    features = head_features(service, t, rows, progress)
    head = train_head(features, [row.label or "" for row in rows], [lb.id for lb in t.labels or []], l2=l2)
    head.info.update(
        {
            "task": task,
            "file": file.name,
            "model": service.engine.info.model,
            "excluded": [p.name for p in exclude],
            "probe_layer": service.engine.probe_layer,  # what the features really were
        }
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    head.save(output)
    return head
