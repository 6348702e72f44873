"""Cutting and joining llama.cpp sequence states by KV cell (engines/kvstate.py): on states written to llama.cpp's
layout here, and on the real model's own states."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from allinone.engines import kvstate

MAGIC = 0xAF143CD8


def state(pos: list[int], v_trans: bool, n_layer: int = 2, row: int = 8, seed: int = 0) -> np.ndarray[Any, Any]:
    """A state in llama.cpp's layout (see kvstate's docstring); each cell's data bytes are random."""
    rng = np.random.default_rng(seed)
    n = len(pos)
    parts = [np.array([MAGIC, 3, 1, n], "<u4").tobytes()]
    if n:
        parts.append(np.array([[p, 1, 3] for p in pos], "<i4").tobytes())
        parts.append(np.array([int(v_trans), n_layer], "<u4").tobytes())
        for _ in range(n_layer):
            parts += [np.array([1], "<i4").tobytes(), np.array([row], "<u8").tobytes(), rng.bytes(n * row)]
        for _ in range(n_layer):
            if v_trans:  # row/2 elements of 2 bytes per cell, element row by element row
                header = np.array([1], "<i4").tobytes() + np.array([2, row // 2], "<u4").tobytes()
            else:
                header = np.array([1], "<i4").tobytes() + np.array([row], "<u8").tobytes()
            parts += [header, rng.bytes(n * row)]
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def per_cell(s: Any) -> dict[int, list[bytes]]:
    """Each cell's bytes in every block, by position (independent of kvstate's own parser for V transposed)."""
    a = np.frombuffer(s, dtype=np.uint8)
    n = int(a[12:16].view("<u4")[0])
    pos = a[16 : 16 + 12 * n].view("<i4").reshape(n, 3)[:, 0]
    at = 16 + 12 * n
    v_trans, n_layer = (int(x) for x in a[at : at + 8].view("<u4"))
    at += 8
    cells: dict[int, list[bytes]] = {int(p): [] for p in pos}
    for block in range(2 * n_layer):
        if block >= n_layer and v_trans:
            size, rows = (int(x) for x in a[at + 4 : at + 12].view("<u4"))
            data = a[at + 12 : at + 12 + size * rows * n].reshape(rows, n, size)
            for i, p in enumerate(pos):
                cells[int(p)].append(data[:, i, :].tobytes())
            at += 12 + size * rows * n
        else:
            row = int(a[at + 4 : at + 12].view("<u8")[0])
            data = a[at + 12 : at + 12 + row * n].reshape(n, row)
            for i, p in enumerate(pos):
                cells[int(p)].append(data[i].tobytes())
            at += 12 + row * n
    assert at == len(a)
    return cells


@pytest.mark.parametrize("v_trans", [False, True])
def test_cutting_a_state_keeps_exactly_the_cells_from_a_position_and_joining_puts_it_back(v_trans: bool) -> None:
    full = state(list(range(10)), v_trans)
    head, tail = kvstate.cells_from(full, 0), kvstate.cells_from(full, 6)
    assert bytes(head) == bytes(full)
    assert sorted(per_cell(tail)) == [6, 7, 8, 9]
    assert per_cell(tail) == {p: c for p, c in per_cell(full).items() if p >= 6}
    prefix = state(list(range(6)), v_trans, seed=1)
    joined = kvstate.join(prefix, tail)
    assert per_cell(joined) == {**per_cell(prefix), **per_cell(tail)}


def test_cells_out_of_position_order_are_cut_by_position() -> None:
    full = state([0, 1, 2, 7, 3, 4, 5, 6], v_trans=False)  # a reply's cell went before some of the prompt's
    assert per_cell(kvstate.cells_from(full, 4)) == {p: c for p, c in per_cell(full).items() if p >= 4}


def test_an_empty_cut_and_joining_with_it_are_well_formed() -> None:
    full = state([0, 1, 2], v_trans=False)
    empty = kvstate.cells_from(full, 3)
    assert len(empty) == 16 and per_cell(kvstate.join(full, empty)) == per_cell(full)


@pytest.mark.parametrize(
    "bad",
    [
        state([0, 1], False)[:-1],  # truncated
        np.concatenate([state([0, 1], False), np.zeros(3, np.uint8)]),  # trailing bytes
        np.frombuffer(np.array([MAGIC, 3, 2, 0], "<u4").tobytes(), np.uint8),  # two KV streams
    ],
)
def test_a_state_of_another_layout_is_refused(bad: np.ndarray[Any, Any]) -> None:
    with pytest.raises(ValueError):
        kvstate.cells_from(bad, 1)


def test_states_of_different_layouts_are_not_joined() -> None:
    with pytest.raises(ValueError):
        kvstate.join(state([0], False, row=8), state([1], False, row=16))


@pytest.mark.model
def test_the_real_models_states_cut_and_join_as_llama_cpp_writes_them(engine: Any) -> None:
    """After a chat turn the saved state holds the conversation's own cells only; restored with its task prefix,
    llama.cpp holds the prefix and those cells, which it writes back as the same bytes (but for the sequence ids)."""
    from allinone.engines import Conversation, GenParams, Message

    engine.clear_cache()
    turn = [Message("system", "You are helpful. " * 8), Message("user", "Hi, I am Ming.")]
    engine.generate(Conversation.of(turn, 1), GenParams(max_tokens=6, temperature=0))
    sched = engine._scheduler
    saved = sched._saved[-1]
    assert saved.base is not None and saved.base is next(iter(sched._prefixes.values()))
    n_prefix = len(saved.base.tokens)

    def check() -> tuple[bytes, bytes, bytes, int]:
        ctx, seq = sched.ctx, sched._free[0]
        assert ctx.restore(seq, saved.base.state, saved.state)
        full = ctx.save(seq)
        ctx.seq_rm(seq, 0)
        return bytes(full), bytes(kvstate.join(saved.base.state, saved.state)), bytes(saved.state), len(full)

    full, joined, own, _ = sched.call(check)
    assert per_cell(full) == per_cell(joined)
    assert per_cell(kvstate.cells_from(full, n_prefix)) == per_cell(own)
    assert sorted(per_cell(full)) == list(range(len(saved.tokens)))
    assert len(own) < len(full) / 2  # the prefix is most of the state
