"""The Python API on the real default model: one object, every task, chat with sessions and streaming."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from allinone import AllInOne, Chat
from allinone.classify import Classification
from allinone.service import TaskService

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ai() -> Iterator[AllInOne]:
    with AllInOne(n_ctx=4096) as loaded:
        yield loaded


def test_classify_gives_the_label_and_probabilities_as_the_cli_and_server_do(
    ai: AllInOne, service: TaskService
) -> None:
    result = ai.classify("这家酒店服务太差了，房间又脏又吵，再也不来了。")
    assert result.label == "negative" and result.display == "😡 LLM 情感判断: 负面"
    assert set(result.probabilities) == {"positive", "negative"} and result.probabilities["negative"] > 0.5
    same = service.classify("sentiment", "这家酒店服务太差了，房间又脏又吵，再也不来了。")
    assert result.probabilities == pytest.approx(same.probabilities, abs=0.06)
    assert ai.classify("我上周买的耳机坏了，可以退货吗？", task="intent").label == "after_sales"


def test_generate_returns_text_and_a_structured_tasks_data(ai: AllInOne) -> None:
    out = ai.generate("keywords", "华为发布了新款折叠屏手机，搭载麒麟芯片，支持卫星通话。", seed=1)
    assert isinstance(out.data, list) and out.data and all(isinstance(k, str) for k in out.data)
    pieces = list(ai.stream("translate", "我明天要去北京出差。", temperature=0))
    assert len(pieces) > 1 and "Beijing" in "".join(pieces)


def test_a_chat_gives_the_sentiment_first_then_a_reply_and_keeps_the_history(ai: AllInOne) -> None:
    chat = ai.chat()
    assert isinstance(chat, Chat)
    sentiment, reply = chat.send("今天工作好累，老板还批评了我", seed=1, max_tokens=40)
    assert sentiment is not None and sentiment.label == "negative" and reply
    events = list(chat.stream("谢谢你，我感觉好一点了", seed=1, max_tokens=40))
    assert isinstance(events[0], Classification) and all(isinstance(e, str) for e in events[1:])
    assert [t["role"] for t in chat.history] == ["user", "assistant", "user", "assistant"]
    assert chat.history[0]["content"] == "今天工作好累，老板还批评了我"  # the visible history has no tag
    plain = ai.chat(sentiment=False)
    assert plain.send("你好", max_tokens=8)[0] is None
