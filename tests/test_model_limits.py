"""Input limits on the real model: a 100 KB text on every task is cut to fit and the result says so (never a
context overflow), and a chat history longer than the context window is trimmed, oldest turns first."""

from __future__ import annotations

from typing import Any

import pytest

from allinone.chat import ChatSession, Turn

pytestmark = pytest.mark.model

SENTENCE = "今天的会议讨论了明年的预算安排，大家意见不一。Emoji 😀🎉 and English words too. "
BIG = "开头：" + SENTENCE * (100_000 // len(SENTENCE.encode()) + 1) + "结尾。"  # over 100 KB of UTF-8


def test_the_big_text_is_over_100_kb() -> None:
    assert len(BIG.encode()) > 100_000


@pytest.mark.parametrize("task", ["sentiment", "intent"])
def test_a_100_kb_text_on_a_classify_task_is_cut_and_gets_a_declared_label(service: Any, task: str) -> None:
    result = service.classify(task, BIG)
    assert result.truncated
    assert result.label in [label.id for label in service.task(task).labels]
    assert result.usage.prompt_tokens < service.engine.info.n_ctx


@pytest.mark.parametrize("task", ["chat", "summary", "translate", "keywords"])
def test_a_100_kb_text_on_a_generate_task_is_cut_and_the_last_chunk_says_so(service: Any, task: str) -> None:
    budget = 64 if service.task(task).output_schema else 4  # a structured reply must be whole JSON
    last = service.generate(task, BIG, None, {"max_tokens": budget, "temperature": 0})
    assert last.finish_reason is not None and last.truncated
    assert last.usage.prompt_tokens <= service.engine.info.n_ctx // 2 + 600  # input at most half the context


def test_a_100_kb_text_on_auto_is_routed(service: Any) -> None:
    found = service.pick_task(BIG)
    assert found.task in service.tasks


def test_a_chat_history_longer_than_the_context_is_trimmed_oldest_first(service: Any) -> None:
    n_ctx = service.engine.info.n_ctx
    turn = "我们继续聊聊昨天看的那部电影，情节很曲折，人物也很丰满。" * 12
    history = [Turn(role, f"第{i}轮：{turn}") for i in range(30) for role in ("user", "assistant")]  # type: ignore[arg-type]
    assert sum(service.engine.count_tokens(t.content) for t in history) > n_ctx
    session = ChatSession(turns=list(history))
    last = service.generate("chat", "你还记得我们聊的电影吗？", session, {"max_tokens": 8, "temperature": 0})
    assert 0 < last.trimmed_turns < len(history) and last.trimmed_turns % 2 == 0
    assert last.usage.prompt_tokens + last.usage.completion_tokens < n_ctx
    assert len(session.turns) == len(history) + 2  # the conversation itself keeps every turn
