"""Load task YAML files: built-in ones, then a user dir whose files override by name."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import TaskDefinitionError
from .model import Task


def builtin_dir() -> Path:
    return Path(__file__).parent / "builtin"


def _format_validation(path: Path, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            problems.append(f"{path}: key '{key}': unknown key")
        else:
            problems.append(f"{path}: key '{key}': {e['msg']}")
    return "; ".join(problems)


def load_task_file(path: Path) -> Task:
    """Parse and validate one task file; errors name the file and the key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise TaskDefinitionError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDefinitionError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise TaskDefinitionError(f"{path}: expected a mapping of task fields at the top level")
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        raise TaskDefinitionError(_format_validation(path, e)) from None
    if task.name != path.stem:
        raise TaskDefinitionError(f"{path}: key 'name': '{task.name}' must match the file name '{path.stem}'")
    task._source = path
    if task.head_path is not None and not task.head_path.is_file():
        raise TaskDefinitionError(f"{path}: key 'head': file not found: {task.head_path}")
    return task


def _files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_tasks(user_dir: Path | None = None) -> dict[str, Task]:
    """All tasks by name; a user file with the same name replaces the built-in one."""
    tasks = {t.name: t for t in map(load_task_file, _files(builtin_dir()))}
    if user_dir is not None:
        if not user_dir.is_dir():
            raise TaskDefinitionError(f"tasks dir not found: {user_dir}")
        tasks.update({t.name: t for t in map(load_task_file, _files(user_dir))})
    return tasks
