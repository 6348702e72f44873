"""The pairwise judge: both orders are scored, so a position bias cancels and a real preference shows."""

from __future__ import annotations

import re

import pytest

from allinone.judge import prefer
from tests.fakes import FakeEngine

WARM = "抱抱你，失去陪伴十年的狗真的很难过。"
COLD = "你可以再养一只狗。"


def shown(prompt: str, n: int) -> str:
    """Reply n (1 or 2) of the pair being judged: the last one in the prompt."""
    return re.findall(rf"回复{n}：(.*?)(?:\n|$)", prompt)[-1]


def test_a_judge_that_always_says_1_is_a_tie_once_both_orders_count() -> None:
    engine = FakeEngine(lambda prompt, word: 0.0 if word == "1" else -3.0)
    p = prefer(engine, "我养了十年的狗去世了", WARM, COLD)
    assert p.p_a_shown_first > 0.9 and p.p_a_shown_second < 0.1  # the bias alone
    assert p.p_a == pytest.approx(0.5) and not p.consistent


def test_a_judge_that_prefers_the_warm_reply_picks_it_in_either_position() -> None:
    engine = FakeEngine(lambda prompt, word: 0.0 if "抱抱" in shown(prompt, int(word)) else -2.0)
    p = prefer(engine, "我养了十年的狗去世了", COLD, WARM)
    assert p.consistent and p.verdict == "b" and p.p_a < 0.2
    assert prefer(engine, "我养了十年的狗去世了", WARM, COLD).verdict == "a"


def test_both_orders_are_judged_with_the_message_and_replies_as_plain_user_text() -> None:
    engine = FakeEngine()
    prefer(engine, "我养了十年的狗去世了", WARM, COLD)
    judged = [[s.text for s in p.suffix if not s.trusted][-1] for p in engine.prompts]
    assert len(judged) == 2
    assert shown(judged[0], 1) == WARM and shown(judged[1], 1) == COLD
    assert all("我养了十年的狗去世了" in j for j in judged)
    assert engine.prompts[0].prefix == engine.prompts[1].prefix  # the judging instructions are the cached prefix


def test_identical_replies_are_a_tie_without_asking_the_model() -> None:
    engine = FakeEngine()
    assert prefer(engine, "hi", "Hello!", "Hello! ").verdict == "tie"
    assert engine.prompts == []
