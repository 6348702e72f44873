"""Pairwise preference between two chat replies, judged by a model through label scoring in both orders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .engines.base import Conversation, Engine, Message

__all__ = ["JUDGE_SYSTEM", "Preference", "prefer"]

JUDGE_SYSTEM = (
    "你是一位对话质量评审。用户向聊天助手倾诉或提问，下面是助手的两个候选回复。"
    "判断哪一个更好：先体会并回应用户的感受，语气温暖真诚，与用户使用同一种语言，切题、通顺、说完整；"
    "不说教，不套话，不自称AI，不拒绝，不把用户的话当成自己的经历。只回答数字 1 或 2。"
)
# Two written examples (not from the benchmark set), one answered 1 and one 2, so the format carries no bias.
JUDGE_EXAMPLES = (
    (
        "我的自行车昨天被偷了，好郁闷。",
        "作为一个AI助手，我无法帮助你找回自行车。你应该提高安全意识。",
        "自行车被偷真的很让人郁闷，尤其是天天骑的车。可以先报警并留意附近的二手平台，以后换一把更结实的锁。",
        "2",
    ),
    (
        "I finally finished knitting my first scarf!",
        "That's wonderful, congratulations! Your first scarf is a real milestone. Enjoy wearing it.",
        "恭喜你完成了围巾。织围巾需要耐心，你应该继续努力，不要骄傲。",
        "1",
    ),
)
LABELS = ("1", "2")


def _pair(message: str, first: str, second: str) -> str:
    return f"用户：{message}\n\n回复1：{first}\n\n回复2：{second}\n\n哪一个回复更好？"


def _fixed_messages() -> list[Message]:
    messages = [Message("system", JUDGE_SYSTEM)]
    for message, first, second, answer in JUDGE_EXAMPLES:
        messages += [Message("user", _pair(message, first, second)), Message("assistant", answer)]
    return messages


def _p_first(engine: Engine, message: str, first: str, second: str) -> float:
    """P("1") against "2" after the judging prompt: how likely the reply shown first is the better one."""
    fixed = _fixed_messages()
    conversation = Conversation.of([*fixed, Message("user", _pair(message, first, second))], n_fixed=len(fixed))
    lp1, lp2 = engine.score(conversation, LABELS).logprobs
    return 1.0 / (1.0 + math.exp(lp2 - lp1))


@dataclass(frozen=True)
class Preference:
    """How much the judge prefers reply `a` over reply `b`, with the position bias averaged out."""

    p_a_shown_first: float  # P(a better) when a is reply 1
    p_a_shown_second: float  # P(a better) when a is reply 2

    @property
    def p_a(self) -> float:
        return (self.p_a_shown_first + self.p_a_shown_second) / 2

    @property
    def consistent(self) -> bool:
        """Both orders pick the same reply (the position did not decide)."""
        return (self.p_a_shown_first > 0.5) == (self.p_a_shown_second > 0.5)

    @property
    def verdict(self) -> Literal["a", "b", "tie"]:
        if self.p_a == 0.5:
            return "tie"
        return "a" if self.p_a > 0.5 else "b"


def prefer(engine: Engine, message: str, a: str, b: str) -> Preference:
    """Judge replies `a` and `b` to `message` in both orders; identical replies are a tie without a model call."""
    if a.strip() == b.strip():
        return Preference(0.5, 0.5)
    return Preference(_p_first(engine, message, a, b), 1.0 - _p_first(engine, message, b, a))
