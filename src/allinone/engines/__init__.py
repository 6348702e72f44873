"""Inference backends behind one small interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Chunk, Engine, EngineInfo, GenParams, Message, Prompt, Scores, Segment, Usage

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "Chunk",
    "Engine",
    "EngineInfo",
    "GenParams",
    "Message",
    "Prompt",
    "Scores",
    "Segment",
    "Usage",
    "load_engine",
]


def load_engine(settings: Settings) -> Engine:
    """Resolve the configured model and load it with the llama.cpp backend."""
    from ..models import resolve_model
    from .llamacpp import LlamaCppEngine

    info = resolve_model(settings.model, settings)
    return LlamaCppEngine(
        info.path,
        name=info.name,
        n_ctx=settings.n_ctx,
        cache_mb=settings.cache_mb,
        n_threads=settings.n_threads,
        n_batch=settings.n_batch,
    )
