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

    from allinone.engines.llamacpp import dry_sampler

    return _penalties_of(dry_sampler(ll, vocab, multiplier, seq), candidates)


def _penalties_of(sampler: Any, candidates: list[int]) -> dict[int, float]:
    """What the sampler subtracts from each candidate's logit (it is freed)."""
    import llama_cpp as ll

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


class _CountingLlama:
    """llama_cpp, counting the DRY samplers made anew (each scans the whole vocabulary for its breakers)."""

    def __init__(self) -> None:
        import llama_cpp

        self._ll, self.made = llama_cpp, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ll, name)

    def llama_sampler_init_dry(self, *args: Any) -> Any:
        self.made += 1
        return self._ll.llama_sampler_init_dry(*args)


@pytest.mark.model
def test_a_dry_sampler_is_made_once_per_multiplier_and_its_clones_penalise_as_one_made_anew(vocab: Any) -> None:
    from allinone.engines.llamacpp import DrySamplers

    counting = _CountingLlama()
    samplers = DrySamplers(counting, vocab)
    breakers = {_token(vocab, "\n")}
    candidates = [*(_token(vocab, c) for c in "abcd"), *breakers]
    rng = random.Random(1)
    penalised = 0
    try:
        for trial in range(60):
            seq = [rng.choice(candidates) for _ in range(rng.choice([rng.randint(2, 40), rng.randint(250, 400)]))]
            multiplier = (0.8, 0.5)[trial % 2]
            cloned = _penalties_of(samplers.make(multiplier, seq), candidates)
            anew = _llama_cpp_penalties(vocab, seq, candidates, multiplier)
            assert cloned.keys() == anew.keys(), seq
            assert all(cloned[k] == pytest.approx(anew[k], rel=1e-6) for k in cloned), seq
            assert cloned == pytest.approx(dry.penalties(seq, multiplier, breakers), rel=1e-4)
            penalised += bool(cloned)
    finally:
        samplers.close()
    assert penalised > 20
    assert counting.made == 2  # one for each multiplier; every other sampler was a clone


@pytest.mark.model
def test_dry_samplers_keep_the_most_recently_used_multipliers(vocab: Any) -> None:
    import llama_cpp as ll

    from allinone.engines.llamacpp import DrySamplers

    counting = _CountingLlama()
    samplers = DrySamplers(counting, vocab, keep=2)
    try:
        for multiplier in (0.1, 0.2, 0.1, 0.3):  # 0.2 is the least recently used when 0.3 comes
            ll.llama_sampler_free(samplers.make(multiplier))
        assert (counting.made, len(samplers)) == (3, 2)
        ll.llama_sampler_free(samplers.make(0.1))
        assert counting.made == 3
        ll.llama_sampler_free(samplers.make(0.2))
        assert (counting.made, len(samplers)) == (4, 2)
    finally:
        samplers.close()
    assert len(samplers) == 0


def _token(vocab: Any, text: str) -> int:
    import llama_cpp as ll

    buf = (ll.llama_token * 4)()
    assert ll.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 4, False, False) == 1
    return int(buf[0])


@pytest.mark.model
def test_penalising_the_top_k_alone_samples_the_same_tokens_as_penalising_the_vocabulary(settings: Settings) -> None:
    """The engine's chain applies DRY to the top-k likeliest tokens instead of the whole vocabulary (llama-server's
    order), in less than half the time a token (benchmarks/sampler.py). DRY only lowers logits, so the draw is the
    same unless a penalty pushes a candidate out of the top k. On real replies, with the same seeds, both orders pick
    the same tokens."""
    import llama_cpp as ll

    from allinone.engines import GenParams
    from allinone.engines.llamacpp import _Context, _quiet, dry_sampler
    from allinone.models import ensure_default

    _quiet(ll)
    model = ll.llama_model_load_from_file(
        str(ensure_default(settings.models_dir)).encode(), ll.llama_model_default_params()
    )
    cparams = ll.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 1024, 2, 2
    counting = _CountingLlama()  # the engine's context makes its DRY samplers through it
    ctx = _Context(counting, model, ll.llama_init_from_model(model, cparams), 512, None)
    picked = penalised = 0
    try:
        for seed, text in enumerate(
            ["我的狗昨天死了，我好难过，我们在一起十二年了。", "Tell me a story about a lighthouse keeper."]
        ):
            params = GenParams(max_tokens=96, temperature=0.8, top_k=40, top_p=0.8, seed=seed, dry_multiplier=0.8)
            prompt = ctx.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", special=True)
            ours = ctx.sampler(params, prompt)
            reference = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())  # DRY over everything
            whole = dry_sampler(ll, ctx._vocab, 0.8, prompt)
            for sampler in (whole, ll.llama_sampler_init_top_k(40), ll.llama_sampler_init_top_p(0.8, 1)):
                ll.llama_sampler_chain_add(reference, sampler)
            ll.llama_sampler_chain_add(reference, ll.llama_sampler_init_temp(0.8))
            ll.llama_sampler_chain_add(reference, ll.llama_sampler_init_dist(seed))
            ll.llama_memory_clear(ll.llama_get_memory(ctx._ctx), True)
            ctx.decode([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
            seen = list(prompt)
            for pos in range(len(prompt), len(prompt) + params.max_tokens):
                penalised += bool(dry.penalties(seen, 0.8))
                token = ctx.sample(ours, -1)
                assert int(ll.llama_sampler_sample(reference, ctx._ctx, -1)) == token, (text, pos)
                seen.append(token)
                picked += 1
                if ctx.is_eog(token):
                    break
                ctx.decode([(token, pos, 0, True)])
            ctx.free_sampler(ours)
            ll.llama_sampler_free(reference)
    finally:
        ctx.close()
        ll.llama_free(ctx._ctx)
        ll.llama_model_free(model)
    assert picked > 100 and penalised > 0  # real replies, with repeats for DRY to penalise
    assert counting.made == 1  # the engine's two replies cloned the DRY sampler it made once
