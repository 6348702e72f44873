"""Continuous batching on the real default model: requests decoded together give the answers they give alone
(within the batch-shape tolerance), a classification does not wait for replies, a closed stream frees its slot."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from allinone.classify import conversation
from allinone.engines import Conversation, GenParams, Message
from allinone.engines.llamacpp import LlamaCppEngine
from allinone.tasks import load_tasks

pytestmark = pytest.mark.model

PROB_TOLERANCE = 0.06  # |Δp| between a text scored alone and under load (benchmarks/batching.py: 200 dev texts)
TEXTS = [
    "这家酒店服务太差了，再也不来了",
    "房间干净整洁，前台服务热情周到，下次还会再来。",
    "快递三天就到了，包装完好，非常满意！",
    "质量太差，用了两天就坏了，客服也不理人。",
    "The hotel staff were friendly and the room was spotless.",
    "Terrible battery life, it died after two hours.",
    "这本书写得真好，一口气读完了，强烈推荐。",
    "排队一个小时，服务员态度恶劣，再也不去了。",
]
WORDS = ["正面", "负面"]


def _convs(task_name: str, texts: list[str]) -> list[Conversation]:
    task = load_tasks()[task_name]
    return [conversation(task, t) for t in texts]


def _p(logprobs: list[float]) -> float:
    return 1 / (1 + math.exp(logprobs[1] - logprobs[0]))


def test_texts_scored_together_agree_with_one_at_a_time(engine: LlamaCppEngine) -> None:
    convs = _convs("sentiment", TEXTS)
    alone = [engine.score(c, WORDS) for c in convs]
    together = engine.score_batch(convs, WORDS)
    for a, t in zip(alone, together, strict=True):
        assert (_p(a.logprobs) > 0.5) == (_p(t.logprobs) > 0.5)
        assert abs(_p(a.logprobs) - _p(t.logprobs)) <= PROB_TOLERANCE
        assert t.usage.prompt_tokens == a.usage.prompt_tokens
        assert 0 < t.usage.cached_tokens < t.usage.prompt_tokens  # the task prefix was shared, not recomputed


def test_multi_token_continuations_score_under_load_as_alone(engine: LlamaCppEngine) -> None:
    convs = _convs("sentiment", TEXTS[:5])
    words = ["正面", "负面", "非常正面的评价"]  # the last is several tokens: decodes after the prompt
    assert engine.count_tokens(words[2]) > 1
    alone = [engine.score(c, words) for c in convs]
    together = engine.score_batch(convs, words)
    for a, t in zip(alone, together, strict=True):
        assert t.logprobs[2] < max(t.logprobs[:2])
        assert t.logprobs == pytest.approx(a.logprobs, abs=0.5, rel=0.03)  # improbable words (-29) drift more


def test_tasks_with_different_prefixes_share_a_batch(engine: LlamaCppEngine) -> None:
    sentiment, intent = _convs("sentiment", TEXTS[:3]), _convs("intent", TEXTS[3:5])
    mixed = [sentiment[0], intent[0], sentiment[1], intent[1], sentiment[2]]
    got = engine.score_batch(mixed, WORDS)
    for conv, scores in zip(mixed, got, strict=True):
        assert _p(scores.logprobs) == pytest.approx(_p(engine.score(conv, WORDS).logprobs), abs=PROB_TOLERANCE)


def test_streams_decoded_together_give_the_same_text_as_one_at_a_time(engine: LlamaCppEngine) -> None:
    prompts = ["Name three colours.", "用一句话介绍北京。", "What is 2 + 2? Answer briefly.", "写一句关于春天的话。"]
    convs = [Conversation.of([Message("user", p)]) for p in prompts]
    params = GenParams(max_tokens=20, temperature=0, seed=1)
    alone = [engine.generate(c, params).text for c in convs]
    steps, busy, start = engine.steps, engine.busy(), time.perf_counter()
    with ThreadPoolExecutor(len(convs)) as pool:
        together = list(pool.map(lambda c: engine.generate(c, params).text, convs))
    wall, after = time.perf_counter() - start, engine.busy()
    assert together == alone
    assert engine.steps - steps < 2 * params.max_tokens  # they shared decodes (alone: one each per token)
    assert after.steps - busy.steps == engine.steps - steps
    assert 0 < after.seconds - busy.seconds <= wall  # the model's own work, within the wall time it took


def test_a_classification_during_four_streams_answers_before_they_end(engine: LlamaCppEngine) -> None:
    conv = Conversation.of([Message("user", "Write a long story about a lighthouse keeper.")])
    params = GenParams(max_tokens=120, temperature=0.7, seed=3)
    ends: list[float] = []
    started = threading.Barrier(5)

    def stream() -> None:
        chunks = engine.stream(conv, params)
        next(chunks)
        started.wait()
        for _ in chunks:
            pass
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()  # all four are streaming
    t0 = time.perf_counter()
    result = engine.score(_convs("sentiment", TEXTS[:1])[0], WORDS)
    answered = time.perf_counter()
    for t in threads:
        t.join()
    assert _p(result.logprobs) < 0.5  # negative, as alone
    assert answered < min(ends), f"the classification took {answered - t0:.2f} s and waited for a reply"


def test_a_closed_stream_frees_its_sequence_for_the_next_request(engine: LlamaCppEngine) -> None:
    conv = Conversation.of([Message("user", "Count slowly from one to one thousand.")])
    streams = [engine.stream(conv, GenParams(max_tokens=2000, temperature=0)) for _ in range(engine.slots.generate)]
    for s in streams:
        next(s)  # every reply slot is busy
    for s in streams:
        s.close()
    steps = engine.steps
    reply = engine.generate(conv, GenParams(max_tokens=4, temperature=0))
    assert reply.finish_reason == "length"
    assert engine.steps - steps <= 8  # freed at the next step, then its own prompt and 4 tokens
