"""qwen-allinone: one small local LLM, loaded once, serving many prompt-defined NLP tasks.

from allinone import AllInOne
ai = AllInOne()
ai.classify("这家酒店服务太差了").label   # 'negative'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import AllInOneError
from .settings import Settings

if TYPE_CHECKING:
    from .api import AllInOne, Chat

__all__ = ["AllInOne", "AllInOneError", "Chat", "Settings", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The API classes, imported on first use (so `import allinone` stays light)."""
    if name in ("AllInOne", "Chat"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'allinone' has no attribute {name!r}")
