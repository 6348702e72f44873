"""Task definitions (YAML files) and their loader."""

from .loader import builtin_dir, check_task_file, load_task_file, load_tasks
from .model import Calibration, Example, Generation, Label, Task, Truncation
from .options import TaskOption, cjk_share

__all__ = [
    "Calibration",
    "Example",
    "Generation",
    "Label",
    "Task",
    "TaskOption",
    "Truncation",
    "builtin_dir",
    "check_task_file",
    "cjk_share",
    "load_task_file",
    "load_tasks",
]
