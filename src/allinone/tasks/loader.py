"""Load task YAML files: built-in ones, then a user dir whose files override by name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import TaskDefinitionError
from .model import FieldProblem, Task

MAX_FILE_BYTES = 1_000_000  # a task file is a few KB; this bounds what a stray file can cost


def builtin_dir() -> Path:
    return Path(__file__).parent / "builtin"


def _format_validation(path: Path, err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        cause = e.get("ctx", {}).get("error")
        if isinstance(cause, FieldProblem):
            problems.append(f"{path}: key '{cause.key}': {cause}")
        elif e["type"] == "extra_forbidden":
            problems.append(f"{path}: key '{key}': unknown key")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: key '{key}': {msg}")
    return problems


def _read(path: Path) -> str:
    """The file's text; OSError unless it is a regular file of at most MAX_FILE_BYTES (a FIFO, a device such as
    /dev/zero behind a symlink, or a huge file would hang the loader or fill memory)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8")


def _parse(path: Path) -> tuple[Task | None, list[str]]:
    try:
        data = yaml.safe_load(_read(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        return None, [f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}"]
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{path}: cannot read: {e}"]
    if not isinstance(data, dict):
        return None, [f"{path}: expected a mapping of task fields at the top level"]
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        return None, _format_validation(path, e)
    problems = []
    if task.name != path.stem:
        problems.append(f"{path}: key 'name': '{task.name}' must match the file name '{path.stem}'")
    task._source = path
    if task.head_path is not None and not task.head_path.is_file():
        problems.append(f"{path}: key 'head': file not found: {task.head_path}")
    return task, problems


def load_task_file(path: Path) -> Task:
    """Parse and validate one task file; errors name the file and the key."""
    task, problems = _parse(path)
    if problems or task is None:
        raise TaskDefinitionError("; ".join(problems))
    return task


def check_task_file(path: Path) -> list[str]:
    """Every problem of one task file, each naming the file and the key; also builds its output grammar."""
    task, problems = _parse(path)
    if task is not None and task.output_schema is not None:
        try:
            task.grammar  # noqa: B018
        except Exception as e:  # the converter's own errors are plain exceptions
            problems.append(f"{path}: key 'output_schema': cannot build a grammar: {e}")
    return problems


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
