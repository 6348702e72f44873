"""Task definitions (YAML files) and their loader."""

from .loader import builtin_dir, load_task_file, load_tasks
from .model import Example, Generation, Label, Task, Truncation

__all__ = [
    "Example",
    "Generation",
    "Label",
    "Task",
    "Truncation",
    "builtin_dir",
    "load_task_file",
    "load_tasks",
]
