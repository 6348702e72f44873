"""Inference backends behind one small interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Chunk, Conversation, Engine, EngineInfo, GenParams, Message, Prompt, Scores, Segment, Slots, Usage

if TYPE_CHECKING:
    from pathlib import Path

    from ..settings import Settings

__all__ = [
    "Chunk",
    "Conversation",
    "Engine",
    "EngineInfo",
    "GenParams",
    "Message",
    "Prompt",
    "Scores",
    "Segment",
    "Slots",
    "Usage",
    "llamacpp_file",
    "load_engine",
]


def llamacpp_file(path: Path, settings: Settings) -> Path:
    """The file the llama.cpp engine loads for the GGUF at `path`: its widened copy (widen.widened: made once, or
    `path` itself when it cannot be), unless ALLINONE_WIDEN=off."""
    from ..widen import widened

    return widened(path, settings.home / "widened") if settings.widen == "on" else path


def load_engine(settings: Settings, probe_layer: int | None = None) -> Engine:
    """Load the configured model with the configured engine (`auto`: the one its reference calls for).

    `probe_layer`: what hidden-state features scoring passes return (see Engine.probe_layer); a learned
    head trained on a layer's features needs an engine probing that layer.
    """
    from ..models import engine_for, resolve_model, transformers_source

    kind = engine_for(settings.model) if settings.engine == "auto" else settings.engine
    if kind == "openai":
        from .openai import OpenAIEngine

        name = settings.model.removeprefix("openai:") if settings.model.startswith("openai:") else ""
        return OpenAIEngine(
            settings.openai_base_url,
            model=name or settings.openai_model,
            api_key=settings.openai_api_key,
            timeout=settings.request_timeout or None,
            concurrency=settings.openai_concurrency,
            n_ctx=settings.openai_n_ctx,
        )
    if kind == "transformers":
        from .transformers import TransformersEngine

        src = transformers_source(settings.model, settings)
        return TransformersEngine(
            src.source,
            name=src.name,
            gguf_file=src.gguf_file,
            dtype=settings.dtype,
            device=settings.device,
            n_ctx=settings.n_ctx,
            cache_mb=settings.cache_mb,
            n_threads=settings.n_threads,
            probe_layer=probe_layer,
        )
    from .llamacpp import LlamaCppEngine, repack_weights

    info = resolve_model(settings.model, settings)
    return LlamaCppEngine(
        llamacpp_file(info.path, settings),
        name=info.name,
        n_ctx=settings.n_ctx,
        cache_mb=settings.cache_mb,
        n_threads=settings.n_threads,
        n_batch=settings.n_batch,
        parallel=settings.parallel,
        repack=repack_weights(settings.repack),
        probe_layer=probe_layer,
        native_dir=settings.home / "native",
    )
