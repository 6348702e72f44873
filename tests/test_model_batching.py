"""Multi-sequence batched scoring on the real default model agrees with one-at-a-time scoring."""

from __future__ import annotations

import math

import pytest

from allinone.engines.llamacpp import LlamaCppEngine
from allinone.tasks import load_tasks

pytestmark = pytest.mark.model

TEXTS = [
    "这家酒店服务太差了，再也不来了",
    "房间干净整洁，前台服务热情周到，下次还会再来。",
    "快递三天就到了，包装完好，非常满意！",
    "质量太差，用了两天就坏了，客服也不理人。",
    "The hotel staff were friendly and the room was spotless.",
    "Terrible battery life, it died after two hours.",
    "这本书写得真好，一口气读完了，强烈推荐。",
    "排队一个小时，服务员态度恶劣，再也不去了。",
    "风景美极了，空气清新，是个度假的好地方。",
]


def _prompts(engine: LlamaCppEngine, task_name: str, texts: list[str]) -> list[object]:
    task = load_tasks()[task_name]
    fixed = task.fixed_messages()
    return [engine.render([*fixed, task.user_message(t)], len(fixed)) for t in texts]


def _p(logprobs: list[float]) -> float:
    return 1 / (1 + math.exp(logprobs[1] - logprobs[0]))


def test_batch_matches_sequential_labels_and_usage(engine: LlamaCppEngine) -> None:
    prompts = _prompts(engine, "sentiment", TEXTS)
    words = ["正面", "负面"]
    seq = [engine.score(p, words) for p in prompts]  # type: ignore[arg-type]
    batched = engine.score_batch(prompts, words)  # type: ignore[arg-type]
    assert len(batched) == len(TEXTS)
    for s, b in zip(seq, batched, strict=True):
        assert (_p(s.logprobs) > 0.5) == (_p(b.logprobs) > 0.5)
        assert abs(_p(s.logprobs) - _p(b.logprobs)) < 0.15  # batch shape moves only the last bits
        assert b.usage.prompt_tokens == s.usage.prompt_tokens
        assert 0 < b.usage.cached_tokens < b.usage.prompt_tokens  # the task prefix was not recomputed


def test_batch_scores_multi_token_continuations(engine: LlamaCppEngine) -> None:
    prompts = _prompts(engine, "sentiment", TEXTS[:5])
    words = ["正面", "负面", "非常正面的评价"]  # the last is several tokens: needs decodes after the prompt
    assert len(engine._tokenize(words[2], special=False)) > 1
    seq = [engine.score(p, words) for p in prompts]  # type: ignore[arg-type]
    batched = engine.score_batch(prompts, words)  # type: ignore[arg-type]
    for s, b in zip(seq, batched, strict=True):
        assert b.logprobs[2] < b.logprobs[0] or b.logprobs[2] < b.logprobs[1]
        assert max(abs(x - y) for x, y in zip(s.logprobs, b.logprobs, strict=True)) < 0.5
    # and the batch context holds only the prefix afterwards: a repeat gives the same numbers
    assert [b.logprobs for b in engine.score_batch(prompts, words)] == [b.logprobs for b in batched]  # type: ignore[arg-type]


def test_batches_group_by_prefix(engine: LlamaCppEngine) -> None:
    sentiment = _prompts(engine, "sentiment", TEXTS[:3])
    intent = _prompts(engine, "intent", TEXTS[3:5])
    mixed = [sentiment[0], intent[0], sentiment[1], intent[1], sentiment[2]]
    words = ["正面", "负面"]
    got = engine.score_batch(mixed, words)  # type: ignore[arg-type]
    alone = [engine.score_batch(sentiment, words), engine.score_batch(intent, words)]  # type: ignore[arg-type]
    assert [g.logprobs for g in got] == [
        alone[0][0].logprobs,
        alone[1][0].logprobs,
        alone[0][1].logprobs,
        alone[1][1].logprobs,
        alone[0][2].logprobs,
    ]


def test_mixed_prefixes_and_single_prompts_score_one_at_a_time(engine: LlamaCppEngine) -> None:
    words = ["正面", "负面"]
    mixed = [*_prompts(engine, "sentiment", TEXTS[:1]), *_prompts(engine, "intent", TEXTS[:1])]
    assert [s.logprobs for s in engine.score_batch(mixed, words)] == [  # type: ignore[arg-type]
        engine.score(p, words).logprobs  # type: ignore[arg-type]
        for p in mixed
    ]
    one = _prompts(engine, "sentiment", TEXTS[:1])
    assert engine.score_batch(one, words)[0].logprobs == engine.score(one[0], words).logprobs  # type: ignore[arg-type]
