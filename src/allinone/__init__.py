"""qwen-allinone: one small local LLM, loaded once, serving many prompt-defined NLP tasks."""

from .errors import AllInOneError
from .settings import Settings

__all__ = ["AllInOneError", "Settings", "__version__"]
__version__ = "0.1.0"
