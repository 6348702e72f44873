"""Every runtime knob in one place: environment variables `ALLINONE_*`, CLI flags and defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "allinone"


class Settings(BaseSettings):
    """Runtime settings; every field can be set as `ALLINONE_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ALLINONE_", extra="ignore", validate_default=True)

    home: Path = Field(
        default_factory=_default_home, description="Cache dir: assembled models, data, the probe's C gate (native/)."
    )
    model: str = Field(
        "default", description="Model reference: `default`, `qwen-1.5b`, a .gguf path or hf:ORG/REPO/FILE.gguf."
    )
    tasks_dir: Path | None = Field(None, description="Extra dir of task YAML files; same name overrides built-in.")
    n_ctx: int = Field(
        8192,
        ge=512,
        le=131072,
        description="Context window in tokens: the longest prompt plus reply; with llama.cpp also the KV cells that "
        "the parallel requests and the cached task prefixes share.",
    )
    cache_mb: int = Field(256, ge=0, description="Memory for saved KV states (task prefixes, recent chats), MB.")
    n_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="CPU threads for inference."
    )
    n_batch: int = Field(512, ge=32, le=8192, description="Max tokens evaluated per llama_decode call.")
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="llama.cpp: replies generated at once (and as many classifications beside them), decoded "
        "together in one batch per step; the context's KV cells (n_ctx) are shared by all of them.",
    )
    repack: Literal["auto", "on", "off"] = Field(
        "off",
        description="llama.cpp: repack the Q4 weights for this CPU's SIMD units at load (llama.cpp's own default); "
        "`auto` = on, except on CPUs with AMX, where llama-cpp-python 0.3.36 crashes on repacked weights.",
    )
    widen: Literal["on", "off"] = Field(
        "on",
        description="llama.cpp: load a copy of the GGUF whose Q5_0 weights are stored as Q8_0, the same values, made "
        "once in home/widened: prompts (a classification is one) compute faster, a decode step reads more bytes "
        "(benchmarks/widen.py); `off` loads the file as it is.",
    )
    batch_size: int = Field(
        1,  # scores as single requests are; batches are faster, moving probabilities in the last bits (batching.py)
        ge=1,
        le=32,
        description="Texts of a bulk `eval`/`classify` scored together as one multi-sequence batch (llama.cpp); "
        "1 = one at a time.",
    )
    engine: Literal["auto", "llamacpp", "transformers", "openai"] = Field(
        "auto",
        description="Inference backend; `auto` picks by the model reference: a .gguf file or `default` -> llamacpp, "
        "a model dir or hub id (ORG/NAME) -> transformers, `openai:[NAME]` -> openai.",
    )
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="transformers engine: weight dtype.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="transformers engine: device; `auto` = cuda when torch sees one, else cpu."
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="openai engine: base URL of the OpenAI-compatible server (with /v1)."
    )
    openai_api_key: str = Field("", description="openai engine: API key sent as `Authorization: Bearer`; empty = none.")
    openai_model: str = Field(
        "", description="openai engine: model name on the server; empty = the first one its /v1/models lists."
    )
    openai_concurrency: int = Field(
        0,
        ge=0,
        le=1024,
        description="openai engine: requests sent to the server at once; 0 = the server's own slot count (llama.cpp's "
        "server says it in /props), else 4.",
    )
    openai_n_ctx: int = Field(
        4096,
        ge=512,
        le=1048576,
        description="openai engine: context size in tokens when the server does not report one (vLLM's max_model_len, "
        "llama.cpp's n_ctx); chat history is trimmed to fit it.",
    )
    use_heads: bool = Field(
        True,
        description="Apply the learned head a classify task declares, where the engine can (the model it was "
        "trained on, hidden states); false or --no-head: label scoring alone (see README, Accuracy).",
    )
    seed: int = Field(-1, description="Default sampling seed; -1 draws a fresh one per request.")
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_file: Path | None = Field(None, description="Request log destination (JSON lines); default stderr.")
    log_input_chars: int = Field(80, ge=0, le=10000, description="Characters of each request's input logged (masked).")
    request_log: bool = Field(
        False, description="Also keep one row per API request in HOME/requests.sqlite3 (WAL), input masked and clipped."
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest accepted HTTP request body, bytes; larger ones get 413."
    )
    max_input_chars: int = Field(
        2000, ge=16, description="Longest task input in characters, unless the task's YAML sets truncation.max_chars."
    )
    max_input_tokens: int = Field(
        3000, ge=16, description="Longest task input in tokens (at most n_ctx / 2), unless the task's YAML sets one."
    )
    max_sessions: int = Field(1000, ge=1, description="Chat sessions kept in memory; least recently used go first.")
    max_sessions_per_key: int = Field(
        1000, ge=1, description="Chat sessions one API key (without keys: everyone) may keep; more get 409."
    )
    max_session_turns: int = Field(
        1000, ge=2, description="Turns (a message or a reply) one chat session may hold; then 409: start a new one."
    )
    session_store: Literal["sqlite", "memory"] = Field(
        "sqlite", description="Chat session store: `sqlite` (HOME/sessions.sqlite3, survives restarts) or `memory`."
    )
    session_retention_days: float = Field(
        0, ge=0, description="Delete chat sessions idle this many days (at startup, then hourly); 0 = keep forever."
    )
    max_queue: int = Field(
        8,
        ge=0,
        description="Model requests that may wait for the model in each lane (replies, classifications); more get "
        "429 at once.",
    )
    request_timeout: float = Field(
        300, ge=0, description="Seconds a model request may wait plus run; then 504 and the model is freed. 0 = none."
    )
    shutdown_timeout: int = Field(
        30, ge=0, description="Seconds `serve` gives requests in flight to finish on SIGTERM; then they are cut."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated API keys (`Authorization: Bearer`); empty = no auth."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty = no CORS headers."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names accepted in the Host header, besides localhost, 127.0.0.1 and ::1 "
        "on a loopback bind (where any other name is refused: DNS rebinding); on other binds, empty = any.",
    )

    @field_validator("api_keys", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def loopback(self) -> bool:
        """The server binds a loopback address: only this machine can reach it."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
