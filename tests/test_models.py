"""Model references: the embedded default (assembled, verified, rebuilt), local files, hf: references."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from allinone import models
from allinone.errors import ModelError
from allinone.models import DEFAULT, ensure_default, resolve_model
from allinone.settings import Settings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir freshly assembled from the installed parts."""
    return ensure_default(tmp_path_factory.mktemp("models"))


def test_default_model_is_assembled_and_verified(assembled: Path) -> None:
    assert assembled.stat().st_size == DEFAULT.size
    assert models._sha256(assembled) == DEFAULT.sha256
    assert not list(assembled.parent.glob(".assembling-*"))  # no temp file left behind
    stamp = json.loads(assembled.with_name(assembled.name + ".verified").read_text())
    assert stamp["size"] == DEFAULT.size


def test_corrupt_default_model_is_detected_and_rebuilt(assembled: Path, tmp_path: Path) -> None:
    target = tmp_path / DEFAULT.filename
    shutil.copyfile(assembled, target)
    ensure_default(tmp_path)  # verifies the copy and stamps it
    with target.open("r+b") as f:  # flip bytes in place, size unchanged
        f.seek(DEFAULT.size // 2)
        f.write(b"\x00garbage\x00")
    assert ensure_default(tmp_path) == target
    assert models._sha256(target) == DEFAULT.sha256


def test_truncated_default_model_is_rebuilt(assembled: Path, tmp_path: Path) -> None:
    target = tmp_path / DEFAULT.filename
    with assembled.open("rb") as src, target.open("wb") as dst:
        dst.write(src.read(1_000_000))  # a partial copy, as an interrupted download leaves
    ensure_default(tmp_path)
    assert target.stat().st_size == DEFAULT.size and models._sha256(target) == DEFAULT.sha256


def test_bad_parts_are_refused_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "part.bin"
    part.write_bytes(b"GGUF" + b"\x00" * 100)
    monkeypatch.setattr(models, "_part_paths", lambda model: [part])
    with pytest.raises(ModelError, match="corrupt"):
        ensure_default(tmp_path / "models")
    assert not (tmp_path / "models" / DEFAULT.filename).exists()
    assert not list((tmp_path / "models").glob(".assembling-*"))


def test_local_gguf_path_is_accepted_and_non_gguf_refused(assembled: Path, tmp_path: Path) -> None:
    info = resolve_model(str(assembled), Settings(home=tmp_path))
    assert info.source == "file" and info.path == assembled
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_model(str(bogus), Settings(home=tmp_path))
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"), Settings(home=tmp_path))


def test_hf_reference_uses_the_local_cache_offline(
    assembled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--Qwen--Qwen2.5-0.5B-Instruct-GGUF"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    os.symlink(assembled, snap / "qwen2.5-0.5b-instruct-q4_k_m.gguf")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    info = resolve_model(
        "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf", Settings(home=tmp_path)
    )
    assert info.source == "huggingface" and info.path.resolve() == assembled.resolve()
    with pytest.raises(ModelError, match="neither in the Hugging Face cache nor reachable"):
        resolve_model("hf:Qwen/NotThere-GGUF/x.gguf", Settings(home=tmp_path))
    with pytest.raises(ModelError, match=r"expected hf:ORG/REPO/FILE\.gguf"):
        resolve_model("hf:justone", Settings(home=tmp_path))


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allinone", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_cli_refuses_a_corrupt_model_file_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))
    result = run_cli("run", "sentiment", "很好", "--model", str(broken), env={"ALLINONE_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr


def test_cli_runs_sentiment_on_the_default_model(settings: Settings) -> None:
    result = run_cli("run", "sentiment", "这家酒店服务太差了，再也不来了", env={"ALLINONE_HOME": str(settings.home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("😡 LLM 情感判断: 负面   (negative 0.")
