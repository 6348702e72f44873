"""Task definitions (YAML files) and their loader."""

from .loader import builtin_dir, load_task_file, load_tasks
from .model import Calibration, Example, Generation, Label, Task, Truncation

__all__ = [
    "Calibration",
    "Example",
    "Generation",
    "Label",
    "Task",
    "Truncation",
    "builtin_dir",
    "load_task_file",
    "load_tasks",
]
