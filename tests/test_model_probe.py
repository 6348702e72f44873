"""Hidden-state probe features on the real default model: the mean of a middle layer over the text's tokens and
the final state, read while llama.cpp computes them, for each sequence of a batch."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from allinone.classify import conversation
from allinone.engines.llamacpp import LlamaCppEngine
from allinone.errors import EngineError, ModelError
from allinone.models import ensure_default
from allinone.settings import Settings
from allinone.tasks import load_tasks

pytestmark = pytest.mark.model

WORDS = ["正面", "负面"]
GOOD, BAD = "房间干净，服务热情，下次还来。", "太吵了，一晚上没睡好，差评。"


@pytest.fixture(scope="module")
def probed(settings: Settings) -> Iterator[LlamaCppEngine]:
    # classification chunks of 128 tokens while replies stream (512 by default): the chunked test's text stays short
    eng = LlamaCppEngine(
        ensure_default(settings.models_dir), name="default", n_ctx=2048, probe_layer=12, score_chunk=128
    )
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def gated(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    """The same probe behind the C gate (built on first use), as `load_engine` sets it up."""
    native = tmp_path_factory.mktemp("native")
    eng = LlamaCppEngine(
        ensure_default(settings.models_dir), name="default", n_ctx=2048, probe_layer=12, native_dir=native
    )
    yield eng
    eng.close()


def _conv(text: str):  # type: ignore[no-untyped-def]
    return conversation(load_tasks()["sentiment"], text)


def _final_state_by_llama_cpp(engine: LlamaCppEngine, text: str) -> np.ndarray:  # type: ignore[type-arg]
    """llama.cpp's own embeddings output (a context of its own in embeddings mode) at the prompt's last token."""
    import llama_cpp as ll

    tokens, _ = engine.tokenize_prompt(engine.render(_conv(text)))
    params = ll.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.embeddings = 1024, 1024, 1024, True
    params.n_threads = params.n_threads_batch = 2
    params.type_k = params.type_v = 1
    ctx = ll.llama_init_from_model(engine._model, params)
    try:
        ids = (ll.llama_token * len(tokens))(*tokens)  # kept alive while llama.cpp reads it
        assert ll.llama_decode(ctx, ll.llama_batch_get_one(ids, len(tokens))) == 0
        n_embd = ll.llama_model_n_embd(engine._model)
        ptr = ll.llama_get_embeddings_ith(ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_embd,)).copy()
    finally:
        ll.llama_free(ctx)


def test_probe_features_come_from_the_same_pass_and_leave_the_scores_unchanged(
    probed: LlamaCppEngine, engine: LlamaCppEngine
) -> None:
    a = probed.score(_conv(GOOD), WORDS, hidden=True)
    b = probed.score(_conv(BAD), WORDS, hidden=True)
    assert a.hidden is not None and b.hidden is not None
    assert len(a.hidden) == 2 * 896 and np.isfinite(a.hidden).all()  # layer-12 mean, then the final state
    reference = _final_state_by_llama_cpp(probed, GOOD)
    assert np.abs(np.array(a.hidden[896:]) - reference).max() < 0.05 * np.abs(reference).max()
    assert np.linalg.norm(np.subtract(a.hidden, b.hidden)) > 1.0  # features depend on the text
    # the label scores are those of an engine without the probe
    assert a.logprobs == pytest.approx(engine.score(_conv(GOOD), WORDS).logprobs, abs=1e-3)
    # and the features do not depend on what was cached: the same again after dropping every state
    probed.clear_cache()
    again = probed.score(_conv(GOOD), WORDS, hidden=True)
    assert np.allclose(again.hidden, a.hidden, atol=1e-3) and again.logprobs == pytest.approx(a.logprobs, abs=1e-3)
    # a pass that does not ask for them does not read them
    assert probed.score(_conv(GOOD), WORDS).hidden is None


def test_each_sequence_of_a_batch_gets_its_own_features(probed: LlamaCppEngine) -> None:
    texts = [GOOD, BAD, "The room was fine but breakfast was poor.", "一般般吧，没什么特别的。"]
    alone = [np.array(probed.score(_conv(t), WORDS, hidden=True).hidden) for t in texts]
    # hold the scheduler while the four arrive, so that they are decoded in one batch
    hold = threading.Thread(target=probed._scheduler.call, args=(lambda: time.sleep(0.5),))
    hold.start()
    time.sleep(0.05)
    steps = probed.steps
    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda t: np.array(probed.score(_conv(t), WORDS, hidden=True).hidden), texts))
    hold.join()
    assert probed.steps - steps == 1
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        assert np.linalg.norm(a - t) < 0.02 * np.linalg.norm(a), f"text {i}: features changed in a batch"
        others = [np.linalg.norm(a - alone[j]) for j in range(len(texts)) if j != i]
        assert min(others) > 0.1 * np.linalg.norm(a)  # and they are not another text's


def test_an_engine_without_a_probe_refuses_hidden_states(engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineError, match="probe layer"):
        engine.score(_conv(GOOD), WORDS, hidden=True)


def test_an_impossible_probe_layer_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ModelError, match=r"probe layer must be in 0\.\.22"):
        LlamaCppEngine(ensure_default(settings.models_dir), name="default", n_ctx=512, probe_layer=23)


def test_a_long_text_scored_in_chunks_while_a_reply_streams_gets_the_features_it_gets_alone(
    probed: LlamaCppEngine,
) -> None:
    from allinone.engines import Conversation, GenParams, Message

    good = "酒店位置很好，离地铁站只有五分钟。"
    bad = "可是房间隔音太差，走廊里整夜都有人说话，空调也坏了，前台说修却一直没人来。"
    text = good * 8 + bad * 8
    n_text = probed.count_tokens(text)
    assert n_text > 2 * probed._scheduler.score_chunk  # computed over several steps while the reply streams
    alone = probed.score(_conv(text), WORDS, hidden=True)
    reply = probed.stream(Conversation.of([Message("user", "Count from one to one hundred.")]), GenParams(200, 0))
    next(reply)  # streaming
    steps = probed.steps
    chunked = probed.score(_conv(text), WORDS, hidden=True)
    assert probed.steps - steps >= 3
    assert next(reply, None) is not None  # still streaming: the reply was not held up for the whole text
    reply.close()
    a, c = np.array(alone.hidden), np.array(chunked.hidden)
    assert np.linalg.norm(a - c) < 0.02 * np.linalg.norm(a)
    p_alone, p_chunked = (1 / (1 + np.exp(s.logprobs[1] - s.logprobs[0])) for s in (alone, chunked))
    assert abs(p_alone - p_chunked) <= 0.06  # the batch-shape tolerance (benchmarks/batching.py)


def test_behind_the_c_gate_the_probe_reads_the_same_features_and_only_when_asked(
    gated: LlamaCppEngine, probed: LlamaCppEngine
) -> None:
    assert gated.info.details["probe_callback"] == "native gate"
    assert probed.info.details["probe_callback"] == "python"
    for text in (GOOD, BAD):
        a, b = gated.score(_conv(text), WORDS, hidden=True), probed.score(_conv(text), WORDS, hidden=True)
        assert a.hidden is not None and b.hidden is not None
        assert np.allclose(a.hidden, b.hidden, atol=1e-4) and a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert gated.score(_conv(GOOD), WORDS).hidden is None
    # replies decode behind the closed gate: the same text as with the Python callback
    from allinone.engines import Conversation, GenParams, Message

    params = GenParams(max_tokens=16, temperature=0.0)
    conv = Conversation.of([Message("user", "写一句关于秋天的话")], 0)
    assert "".join(c.text for c in gated.stream(conv, params)) == "".join(c.text for c in probed.stream(conv, params))
