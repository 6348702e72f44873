"""DRY repetition penalties (engines/dry.py): worked examples, and the same penalties as llama.cpp's own DRY
sampler (which the llama.cpp engine uses) on random token sequences."""

from __future__ import annotations

import ctypes
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from allinone.engines import dry
from allinone.settings import Settings


def test_no_repeat_no_penalty() -> None:
    assert dry.penalties([1, 2, 3, 4, 5], 0.8) == {}
    assert dry.penalties([1, 2, 1, 2], 0.0) == {}  # 0 is off


def test_the_token_that_followed_an_earlier_occurrence_of_the_ending_is_penalised() -> None:
    assert dry.penalties([1, 2, 3, 1, 2], 0.8) == {3: pytest.approx(0.8)}  # "1 2" was followed by 3
    assert dry.penalties([7, 1, 2, 3, 7, 1, 2], 0.8) == {3: pytest.approx(0.8 * 1.75)}  # a longer repeat costs more
    assert dry.penalties([1, 2, 3, 9, 2], 0.8) == {}  # one token is allowed to repeat


def test_a_breaker_ends_the_repeat_and_is_never_penalised() -> None:
    assert dry.penalties([1, 2, 3, 1, 2], 0.8, breakers={2}) == {}  # the ending starts after the breaker
    assert dry.penalties([5, 1, 2, 0, 5, 1, 2], 0.8, breakers={0}) == {}  # "5 1 2" was followed by a breaker
    assert dry.penalties([1, 2, 3, 1, 2], 0.8, last_n=3) == {}  # the earlier "1 2" is out of the window


@pytest.fixture(scope="module")
def vocab(settings: Settings) -> Iterator[Any]:
    import llama_cpp as ll

    from allinone.engines.llamacpp import _quiet
    from allinone.models import ensure_default

    _quiet(ll)
    path: Path = ensure_default(settings.models_dir)
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    yield ll.llama_model_get_vocab(model)
    ll.llama_model_free(model)


def _llama_cpp_penalties(vocab: Any, seq: list[int], candidates: list[int], multiplier: float) -> dict[int, float]:
    import llama_cpp as ll

    breakers = (ctypes.c_char_p * len(dry.BREAKERS))(*(b.encode() for b in dry.BREAKERS))
    sampler = ll.llama_sampler_init_dry(
        vocab, multiplier, dry.BASE, dry.ALLOWED_LENGTH, dry.LAST_N, breakers, len(breakers)
    )
    for token in seq:
        ll.llama_sampler_accept(sampler, token)
    data = np.zeros(len(candidates), dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
    data["id"] = candidates
    arr = ll.llama_token_data_array(data.ctypes.data_as(ctypes.POINTER(ll.llama_token_data)), len(data), -1, False)
    ll.llama_sampler_apply(sampler, ctypes.byref(arr))
    ll.llama_sampler_free(sampler)
    return {int(i): -float(x) for i, x in zip(data["id"], data["logit"], strict=True) if x != 0}


@pytest.mark.model
def test_the_same_penalties_as_llama_cpps_dry_sampler(vocab: Any) -> None:
    import llama_cpp as ll

    def token(text: str) -> int:
        buf = (ll.llama_token * 4)()
        assert ll.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 4, False, False) == 1
        return int(buf[0])

    letters, newline = [token(c) for c in "abcd"], token("\n")  # "\n" is one of the breakers
    rng = random.Random(0)
    compared = 0
    for trial in range(400):
        alphabet = letters + [newline] * (trial % 2)
        seq = [rng.choice(alphabet) for _ in range(rng.choice([rng.randint(2, 40), rng.randint(250, 300)]))]
        multiplier = rng.choice([0.3, 0.8, 2.0])
        theirs = _llama_cpp_penalties(vocab, seq, [*letters, newline], multiplier)
        ours = dry.penalties(seq, multiplier, {newline})
        assert ours.keys() == theirs.keys(), seq
        assert all(ours[k] == pytest.approx(theirs[k], rel=1e-4) for k in ours), seq
        compared += bool(ours)
    assert compared > 100  # most sequences had something to penalise
