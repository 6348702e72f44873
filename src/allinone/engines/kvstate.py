"""llama.cpp's saved state of one sequence (`llama_state_seq_get_data`), cut and joined by KV cell.

A chat's state after a reply is kept without the cells of its task prefix (system prompt and examples: ~8 MB of
the default chat task's ~8.3 MB after a short turn), and joined to the prefix's own saved state when the
conversation goes on. So the chat-state cache holds conversations, not copies of the same prefix.

The layout, as llama.cpp 0.3.36's `llama_context::state_seq_get_data` and `llama_kv_cache::state_write` write it:
u32 magic, i32 sequence, u32 streams (1: a unified KV cache), u32 cells; per cell i32 position, u32 sequence count
(1), i32 sequence; u32 v_trans, u32 layers; per layer i32 K type, u64 row bytes and one row per cell; then V the
same way or, transposed (without flash attention), per layer i32 type, u32 element bytes, u32 rows of one
element per cell. A state that does not parse exactly (another llama.cpp, or a model whose cells carry more, such
as M-RoPE positions) raises ValueError, and the caller keeps whole states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Bytes = np.ndarray[Any, np.dtype[np.uint8]]


@dataclass
class _Block:
    header: bytes  # the layer's type and sizes, as written
    cells: np.ndarray[Any, Any]  # axis 0: one entry per cell
    transposed: bool = False  # written element row by element row (V without flash attention)


@dataclass
class _State:
    head: bytes  # magic and sequence
    pos: np.ndarray[Any, Any]  # (cells, 3) int32: position, sequence count, sequence
    v_trans: int
    blocks: list[_Block]  # K of every layer, then V of every layer


class _Reader:
    def __init__(self, data: Bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> Bytes:
        if self.at + n > len(self.data):
            raise ValueError("the state is shorter than its layout says")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def int(self, dtype: str) -> int:
        d = np.dtype(dtype)
        return int(self.take(d.itemsize).view(d)[0])


def _parse(state: Any) -> _State:
    r = _Reader(np.frombuffer(state, dtype=np.uint8))
    head = r.take(8).tobytes()
    if r.int("<u4") != 1:
        raise ValueError("not a state of one KV stream")
    n_cells = r.int("<u4")
    if n_cells == 0:
        if r.at != len(r.data):
            raise ValueError("bytes after an empty state")
        return _State(head, np.zeros((0, 3), np.int32), 0, [])
    pos = r.take(12 * n_cells).view("<i4").reshape(n_cells, 3)
    if not (pos[:, 1] == 1).all():
        raise ValueError("cells not of one sequence each")
    v_trans, n_layer = r.int("<u4"), r.int("<u4")
    blocks = []
    for _ in range(n_layer):  # K, one row per cell
        header = r.take(12)
        row = int(header[4:].view("<u8")[0])
        blocks.append(_Block(header.tobytes(), r.take(row * n_cells).reshape(n_cells, row)))
    for _ in range(n_layer):
        if v_trans:  # rows of elements, one element per cell
            header = r.take(12)
            size, rows = (int(x) for x in header[4:].view("<u4"))
            data = r.take(size * rows * n_cells).reshape(rows, n_cells, size).transpose(1, 0, 2)
            blocks.append(_Block(header.tobytes(), data, transposed=True))
        else:
            header = r.take(12)
            row = int(header[4:].view("<u8")[0])
            blocks.append(_Block(header.tobytes(), r.take(row * n_cells).reshape(n_cells, row)))
    if r.at != len(r.data):
        raise ValueError("bytes left after the state's layout")
    return _State(head, pos, v_trans, blocks)


def _write(head: bytes, pos: np.ndarray[Any, Any], v_trans: int, blocks: list[tuple[bytes, list[Any], bool]]) -> Bytes:
    """A state from its parts, copied once: each block is its header and its cells in pieces, in order."""
    n_cells = len(pos)
    parts: list[Any] = [np.frombuffer(head, np.uint8), np.array([1, n_cells], "<u4").view(np.uint8)]
    if n_cells:
        parts += [np.ascontiguousarray(pos, "<i4").reshape(-1).view(np.uint8)]
        parts += [np.array([v_trans, len(blocks) // 2], "<u4").view(np.uint8)]
        for header, pieces, transposed in blocks:
            parts.append(np.frombuffer(header, np.uint8))
            if transposed:  # element rows, each holding every cell's element
                parts.append(np.concatenate(pieces).transpose(1, 0, 2).reshape(-1))
            else:
                parts += [piece.reshape(-1) for piece in pieces]  # rows of cells: views, copied by the concatenate
    return np.concatenate(parts)


def cells_from(state: Any, start: int) -> Bytes:
    """The state of the cells at positions `start` and after."""
    s = _parse(state)
    kept = np.flatnonzero(s.pos[:, 0] >= start)
    run = len(kept) > 0 and kept[-1] - kept[0] + 1 == len(kept)  # one run of cells, as a sequence's usually are
    keep: Any = slice(kept[0], kept[-1] + 1) if run else kept  # a slice is a view; per-cell indexing copies
    return _write(s.head, s.pos[keep], s.v_trans, [(b.header, [b.cells[keep]], b.transposed) for b in s.blocks])


def join(*states: Any) -> Bytes:
    """One state holding the cells of all of them, in order (a task prefix, then a conversation's own cells)."""
    parsed = [s for s in map(_parse, states) if len(s.pos)]
    if not parsed:
        return np.frombuffer(states[0], dtype=np.uint8)
    first = parsed[0]
    for s in parsed[1:]:
        if s.v_trans != first.v_trans or [b.header for b in s.blocks] != [b.header for b in first.blocks]:
            raise ValueError("states of different KV layouts")
    blocks = [(b.header, [s.blocks[i].cells for s in parsed], b.transposed) for i, b in enumerate(first.blocks)]
    return _write(first.head, np.concatenate([s.pos for s in parsed]), first.v_trans, blocks)
