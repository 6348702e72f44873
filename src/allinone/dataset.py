"""Labelled and unlabelled text files (JSONL or CSV) read row by row, with line-numbered errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .tasks import Task


@dataclass
class Row:
    line: int  # 1-based line number in the file (CSV: of the record's first line)
    data: dict[str, Any]
    text: str
    label: str | None = None  # a label id of the task, when a label field was asked for


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    raise InvalidInput(f"{path}: unsupported file type '{suffix}'; use .jsonl, .csv or .tsv")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    fmt = _format(path)
    try:
        f = path.open(encoding="utf-8", newline="")
    except OSError as e:
        raise InvalidInput(f"{path}: cannot open: {e.strerror}") from None
    with f:
        try:
            if fmt == "jsonl":
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InvalidInput(f"{path}:{n}: invalid JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise InvalidInput(f"{path}:{n}: expected a JSON object")
                    yield n, obj
            else:
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
                for record in reader:
                    yield reader.line_num, dict(record)
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: not UTF-8 text") from None


def label_lookup(task: Task, mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Names accepted for each label: its id, display text, an explicit mapping (e.g. 1 -> positive)."""
    assert task.labels is not None
    lookup = {label.id: label.id for label in task.labels} | {label.display: label.id for label in task.labels}
    ids = {label.id for label in task.labels}
    for raw, target in (mapping or {}).items():
        if target not in ids:
            raise InvalidInput(f"label map: '{target}' is not a label of task '{task.name}' ({', '.join(sorted(ids))})")
        lookup[raw] = target
    return lookup


def read_rows(
    path: Path,
    text_field: str = "text",
    label_field: str | None = None,
    lookup: Mapping[str, str] | None = None,
) -> Iterator[Row]:
    """Yield rows; a missing field or an unknown label is an error naming the line."""
    for n, data in _records(path):
        if text_field not in data:
            raise InvalidInput(f"{path}:{n}: missing field '{text_field}'")
        text = data[text_field]
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{path}:{n}: field '{text_field}' is empty or not text")
        label = None
        if label_field is not None:
            if label_field not in data:
                raise InvalidInput(f"{path}:{n}: missing field '{label_field}'")
            raw = str(data[label_field])
            if lookup is None or raw not in lookup:
                known = ", ".join(sorted(lookup or {}))
                raise InvalidInput(f"{path}:{n}: label '{raw}' is not one of the task's labels ({known})")
            label = lookup[raw]
        yield Row(n, data, text, label)


def count_rows(path: Path) -> int:
    """Number of records, for progress bars (a cheap pass over the file)."""
    return sum(1 for _ in _records(path))
