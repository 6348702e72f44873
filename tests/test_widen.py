"""Widened weights: a GGUF's Q5_0 tensors copied as Q8_0 hold the same values; the copy is made once and loaded."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize

from allinone.settings import Settings
from allinone.widen import widened


def _gguf(path: Path, tensors: dict[str, tuple[np.ndarray, Q]]) -> Path:
    """A small GGUF with metadata of every kind the reader must step over, and these tensors."""
    rng = np.random.default_rng(0)
    w = GGUFWriter(path, "qwen2")
    w.add_string("general.name", "tiny")
    w.add_uint32("general.alignment", 64)
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_float32("qwen2.rope.freq_base", 1e6)
    for name, (values, qtype) in tensors.items():
        data = values if qtype == Q.F32 else quantize(values + rng.normal(0, 1e-3, values.shape), qtype)
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _values(path: Path) -> dict[str, tuple[np.ndarray, Q]]:
    return {t.name: (dequantize(np.asarray(t.data), t.tensor_type), t.tensor_type) for t in GGUFReader(path).tensors}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return _gguf(
        tmp_path / "tiny.gguf",
        {
            "token_embd.weight": (rng.normal(size=(16, 64)).astype(np.float32), Q.Q5_0),
            "blk.0.attn_q.weight": (rng.normal(size=(64, 96)).astype(np.float32), Q.Q5_0),
            "blk.0.attn_norm.weight": (rng.normal(size=(96,)).astype(np.float32), Q.F32),
            "blk.0.ffn_down.weight": (rng.normal(size=(8, 256)).astype(np.float32), Q.Q4_0),
            "output.weight": (rng.normal(size=(16, 64)).astype(np.float32), Q.Q8_0),
        },
    )


def test_widened_q5_0_weights_are_q8_0_with_exactly_the_same_values(model: Path, tmp_path: Path) -> None:
    copy = widened(model, tmp_path / "cache")
    assert copy != model and copy.parent == tmp_path / "cache"
    before, after = _values(model), _values(copy)
    assert list(after) == list(before)  # every tensor, in order
    assert after["blk.0.attn_q.weight"][1] == Q.Q8_0
    assert after["token_embd.weight"][1] == Q.Q5_0  # only looked up by row: the model has an output matrix
    assert after["blk.0.ffn_down.weight"][1] == Q.Q4_0
    for name, (values, _) in before.items():
        assert np.array_equal(after[name][0], values), name
    src, dst = GGUFReader(model), GGUFReader(copy)
    assert [(f.name, f.contents()) for f in dst.fields.values() if not f.name.startswith("GGUF.")] == [
        (f.name, f.contents()) for f in src.fields.values() if not f.name.startswith("GGUF.")
    ]
    assert all(t.data_offset % 64 == 0 for t in dst.tensors)  # the file's own alignment kept


def test_the_copy_is_made_once_and_again_when_the_model_file_changes(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = widened(model, cache)
    made = first.stat().st_mtime_ns
    assert widened(model, cache) == first and first.stat().st_mtime_ns == made
    os.utime(model, ns=(made + 10**9, made + 10**9))  # a new version of the file
    second = widened(model, cache)
    assert second != first and not first.exists() and second.is_file()
    assert [p.name for p in cache.iterdir()] == [second.name]  # no stale copy or temp file left


def test_a_model_without_q5_0_weights_is_loaded_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    plain = _gguf(
        tmp_path / "plain.gguf", {"blk.0.attn_q.weight": (rng.normal(size=(4, 64)).astype(np.float32), Q.Q8_0)}
    )
    assert widened(plain, tmp_path / "cache") == plain
    assert not list((tmp_path / "cache").glob("*.gguf"))


def test_a_model_split_into_files_is_loaded_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    part = tmp_path / "m-00001-of-00002.gguf"
    w = GGUFWriter(part, "qwen2")
    w.add_uint16("split.count", 2)  # llama.cpp would look for m-00002-of-00002.gguf beside the copy
    w.add_tensor("blk.0.attn_q.weight", quantize(rng.normal(size=(4, 64)).astype(np.float32), Q.Q5_0), raw_dtype=Q.Q5_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert widened(part, tmp_path / "cache") == part


def test_a_cache_that_cannot_be_written_loads_the_model_as_it_is_with_a_warning(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="allinone.widen"):
        assert widened(model, blocked / "cache") == model
    assert "could not widen" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"\0" * 4096, b"GGUF" + os.urandom(4096), b"", b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**64 - 1) + b"\0" * 64],
    ids=["zeros", "corrupt", "empty", "huge-length"],
)
def test_a_file_that_is_not_readable_gguf_is_loaded_as_it_is_without_a_warning(
    content: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert widened(junk, tmp_path / "cache") == junk  # llama.cpp then says what is wrong with it, in one line
        assert widened(tmp_path / "missing.gguf", tmp_path / "cache") == tmp_path / "missing.gguf"
    assert not caplog.records


@pytest.mark.model
def test_the_default_engine_loads_the_widened_copy_which_scores_as_the_file_as_it_is(
    settings: Settings, engine: object
) -> None:
    from allinone.classify import conversation
    from allinone.engines import load_engine
    from allinone.models import ensure_default
    from allinone.tasks import load_tasks

    original = ensure_default(settings.models_dir)
    path = Path(str(engine.info.details["path"]))  # type: ignore[attr-defined]
    assert path == widened(original, settings.home / "widened") and path != original
    assert not [t.name for t in GGUFReader(path).tensors if t.tensor_type == Q.Q5_0 and t.name != "token_embd.weight"]
    plain = load_engine(settings.model_copy(update={"widen": "off", "n_ctx": 2048}))
    try:
        assert plain.info.details["path"] == str(original)
        task = load_tasks()["sentiment"]
        words = [w for label in task.labels or [] for w in label.words]
        for text in [
            "这家酒店服务太差了，再也不来了",
            "房间干净，早餐丰富，下次还来",
            "The battery died after two days.",
            "还行吧",
        ]:
            conv = conversation(task, text)
            a, b = engine.score(conv, words).logprobs, plain.score(conv, words).logprobs  # type: ignore[attr-defined]
            assert np.allclose(a, b, atol=0.02), (text, a, b)
    finally:
        plain.close()
