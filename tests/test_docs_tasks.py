"""docs/tasks.md explains every field a task file may have."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from allinone.tasks.model import Calibration, Example, Generation, Label, Routing, Task, Truncation
from allinone.tasks.options import ByScript, ChoiceOption, NumberValue, TaskOption

DOC = (Path(__file__).resolve().parents[1] / "docs" / "tasks.md").read_text(encoding="utf-8")
MODELS: list[type[BaseModel]] = [
    Task,
    Label,
    Example,
    Generation,
    Calibration,
    Truncation,
    Routing,
    TaskOption,
    ChoiceOption,
    NumberValue,
    ByScript,
]


def test_every_task_field_is_explained_in_the_docs() -> None:
    missing = [f"{m.__name__}.{name}" for m in MODELS for name in m.model_fields if f"`{name}`" not in DOC]
    assert not missing, f"fields missing from docs/tasks.md: {missing}"


def test_every_task_field_has_a_description() -> None:
    missing = [f"{m.__name__}.{n}" for m in MODELS for n, f in m.model_fields.items() if not f.description]
    assert not missing
