"""`python -m llama_cpp.server` with llama.cpp's weight repacking off, for the tests that need a real
OpenAI-compatible server. On CPUs with AMX, llama.cpp (llama-cpp-python 0.3.36) repacks Q4_K weights for AMX and
the process then crashes on its first large batch; the server has no setting for it, so the default is patched."""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp.llama_cpp as ll

_defaults = ll.llama_model_default_params


def _model_params() -> Any:
    params = _defaults()
    params.use_extra_bufts = False
    return params


ll.llama_model_default_params = _model_params

if __name__ == "__main__":
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
