"""Reading hidden states while llama.cpp computes them (the scheduler's eval callback), for learned heads."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from . import native

Rows = np.ndarray[Any, np.dtype[np.float32]]

# llama.cpp asks its eval callback about every graph node of every decode ("do you want this tensor?"), and for each
# one wanted, once computed, hands it over. Through ctypes each call takes the GIL, about a thousand times a decode,
# and waits for it while the server's other threads hold it. This gate answers the questions in C, by the tensor's
# name, and calls Python only with the wanted tensors, computed, between `start` and `stop`; while the probe is off,
# llama.cpp computes the whole graph at once.
GATE_C = r"""
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
typedef bool (*eval_cb)(void *tensor, bool ask, void *user_data);
typedef const char *(*name_fn)(const void *tensor);
struct gate { volatile int on; eval_cb python; name_fn name; int n_wanted; const char **wanted; };
bool allinone_gate(void *tensor, bool ask, void *user_data) {
    struct gate *g = (struct gate *)user_data;
    if (!g->on) return !ask; /* ask: "do you want this tensor?" no; after compute: "continue?" yes */
    if (!ask) return g->python(tensor, ask, NULL); /* a wanted tensor, computed: Python copies it */
    const char *name = g->name(tensor);
    for (int i = 0; i < g->n_wanted; i++)
        if (name != NULL && strcmp(name, g->wanted[i]) == 0) return true;
    return false;
}
"""


class _Gate(ctypes.Structure):
    _fields_ = [
        ("on", ctypes.c_int),
        ("python", ctypes.c_void_p),
        ("name", ctypes.c_void_p),  # ggml_get_name
        ("n_wanted", ctypes.c_int),
        ("wanted", ctypes.POINTER(ctypes.c_char_p)),
    ]


class Probe:
    """Copies out, during one decode, the hidden state after each of `layers` (a row per token of the batch) and
    the final normed hidden state (`result_norm`: a row per token that outputs logits, in batch order).

    Only installed when a learned head asks for it: the callback runs for every graph node of every decode; between
    `start` and `stop` it copies the two tensors. With `native_dir`, llama.cpp calls a C gate (built there on first
    use) that answers every question in C and calls Python only with the wanted tensors between `start` and `stop`;
    without it, or with no C compiler, it calls Python for every node, which costs a few per cent of speed.
    """

    def __init__(
        self, ll: Any, layers: int | Sequence[int], n_layer: int, n_embd: int, native_dir: Path | None = None
    ) -> None:
        self.layers = [layers] if isinstance(layers, int) else list(layers)
        for layer in self.layers:
            if not 0 <= layer < n_layer - 1:  # the last layer's output keeps only the rows asked for
                raise ModelError(f"probe layer must be in 0..{n_layer - 2} for this model, not {layer}")
        lib = ctypes.CDLL(str(Path(ll.__file__).parent / "lib" / "libggml-base.so"))
        lib.ggml_get_name.restype, lib.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        lib.ggml_nelements.restype, lib.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self._lib, self._n_embd = lib, n_embd
        self._names = {f"l_out-{layer}".encode(): f"layer{layer}" for layer in self.layers}
        self._names[b"result_norm"] = "final"
        self.rows: dict[str, Rows] = {}
        self.callback = ll.ggml_backend_sched_eval_callback(self._eval)  # kept alive with the engine
        wanted = list(self._names)
        self._wanted = (ctypes.c_char_p * len(wanted))(*wanted)  # kept alive with the gate that points at it
        python = ctypes.cast(self.callback, ctypes.c_void_p).value
        get_name = ctypes.cast(lib.ggml_get_name, ctypes.c_void_p).value
        self._gate = _Gate(0, python, get_name, len(wanted), self._wanted)  # on: between start and stop
        gate = native.load("gate", GATE_C, native_dir) if native_dir is not None else None
        # what the context is given: llama.cpp calls eval_fn(tensor, ask, eval_data)
        self.eval_fn, self.eval_data = self.callback, None
        if gate is not None:
            address = ctypes.cast(gate.allinone_gate, ctypes.c_void_p).value
            self.eval_fn = ll.ggml_backend_sched_eval_callback(address)
            self.eval_data = ctypes.cast(ctypes.pointer(self._gate), ctypes.c_void_p)
        self.native = gate is not None

    def _eval(self, tensor: int, ask: bool, _user_data: int) -> bool:
        if not self._gate.on:
            return not ask  # ask: "do you want this tensor?" no; after compute: "continue?" yes
        name = self._names.get(self._lib.ggml_get_name(tensor))
        if ask:
            return name is not None
        if name is not None:
            n = self._lib.ggml_nelements(tensor)
            data = np.empty(n, dtype=np.float32)
            self._lib.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, n * 4)
            rows = data.reshape(-1, self._n_embd)
            self.rows[name] = rows if name not in self.rows else np.concatenate([self.rows[name], rows])
        return True

    def start(self) -> None:
        self._gate.on, self.rows = 1, {}

    def stop(self) -> None:
        self._gate.on = 0
