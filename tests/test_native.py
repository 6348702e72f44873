"""The C helpers built on first use (engines/native.py): built once per source, cached by its hash, and None (the
caller's Python path) when there is no compiler or the source does not build."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from allinone.engines import native
from allinone.engines.probe import GATE_C, _Gate

ADD = "int add(int a, int b) { return a + b; }\n"


def test_a_helper_is_built_once_and_loaded_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = native.load("add", ADD, tmp_path)
    assert lib is not None and lib.add(2, 3) == 5
    assert len(list(tmp_path.glob("add-*.so"))) == 1

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    again = native.load("add", ADD, tmp_path)
    assert again is not None and again.add(40, 2) == 42
    # another source is another file
    with pytest.raises(AssertionError, match="built again"):
        native.load("add", ADD.replace("a + b", "a - b"), tmp_path)


def test_a_source_that_does_not_build_gives_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert native.load("broken", "int f( {", tmp_path) is None
    assert "building the broken helper failed" in caplog.text
    assert not list(tmp_path.glob("*.so"))


def test_no_compiler_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.load("add", ADD, tmp_path) is None
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert native.load("add", ADD, tmp_path) is None


def test_the_probe_gate_answers_by_name_in_c_and_calls_python_only_with_wanted_tensors(tmp_path: Path) -> None:
    lib = native.load("gate", GATE_C, tmp_path)
    assert lib is not None
    callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
    names = {
        t: ctypes.create_string_buffer(n) for t, n in {7: b"l_out-3", 8: b"attn_norm-3", 9: b"result_norm"}.items()
    }
    # fake tensors: the gate asks only their names (ggml_get_name's answer, a char pointer)
    get_name = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda tensor: ctypes.addressof(names[tensor]))
    called: list[tuple[int, bool]] = []

    def python(tensor: int, ask: bool, _data: int) -> bool:
        called.append((tensor, ask))
        return False  # "stop", so that the test sees Python's answer

    py = callback(python)
    wanted = (ctypes.c_char_p * 2)(b"l_out-3", b"result_norm")
    gate = _Gate(0, ctypes.cast(py, ctypes.c_void_p).value, ctypes.cast(get_name, ctypes.c_void_p).value, 2, wanted)
    fn = callback(ctypes.cast(lib.allinone_gate, ctypes.c_void_p).value)
    data = ctypes.cast(ctypes.pointer(gate), ctypes.c_void_p)
    assert (fn(7, True, data), fn(7, False, data)) == (False, True)  # off: nothing wanted, go on
    gate.on = 1
    assert [fn(t, True, data) for t in (7, 8, 9)] == [True, False, True]  # on: the wanted names, answered in C
    assert called == []
    assert fn(9, False, data) is False  # a wanted tensor, computed: Python's answer
    assert called == [(9, False)]
