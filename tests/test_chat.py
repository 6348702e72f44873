from __future__ import annotations

from allinone import chat
from allinone.chat import ChatSession, stream_reply
from allinone.engines.base import GenParams
from allinone.events import Classified, Done, Event, TaskCall, Token
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import cjk_share, load_tasks
from tests.fakes import FakeEngine

TASKS = load_tasks()


def analyze_and_reply(engine: FakeEngine, session: ChatSession, text: str) -> list[Event]:
    return list(TaskService(Settings(), engine).run(TaskCall("chat", text, session=session, sentiment="sentiment")))


def negative(prompt: str, word: str) -> float:
    return 0.0 if word == "负面" else -5.0


def user_texts(engine: FakeEngine) -> list[str]:
    return [s.text for s in engine.prompts[-1].suffix if not s.trusted]


def test_history_is_kept_across_turns() -> None:
    engine, session = FakeEngine(), ChatSession()
    engine.enqueue("你好！", "当然记得。")
    "".join(c.text for c in stream_reply(engine, TASKS["chat"], session, "你好", GenParams()))
    reply = "".join(c.text for c in stream_reply(engine, TASKS["chat"], session, "记得我吗", GenParams()))
    assert reply == "当然记得。"
    assert user_texts(engine) == ["你好", "你好！", "记得我吗"]
    assert session.history == [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "记得我吗"},
        {"role": "assistant", "content": "当然记得。"},
    ]


def test_combined_flow_gives_sentiment_first_and_tags_only_the_model_context() -> None:
    engine, session = FakeEngine(negative), ChatSession()
    engine.enqueue("抱抱你。")
    events = analyze_and_reply(engine, session, "我好难过")
    assert isinstance(events[0], Classified) and events[0].result.display == "😡 LLM 情感判断: 负面"
    assert events[0].next_lane == "generate" and isinstance(events[-1], Done)
    assert all(isinstance(e, Token) for e in events[1:-1])
    assert "".join(e.text for e in events if isinstance(e, Token)) == "抱抱你。"
    assert user_texts(engine)[-1] == "[用户情绪：负面] 我好难过"
    assert session.history[0] == {"role": "user", "content": "我好难过"}


def test_sentiment_tags_of_earlier_turns_stay_in_the_model_context() -> None:
    engine, session = FakeEngine(negative), ChatSession()
    for text in ["我好难过", "还是难过"]:
        list(analyze_and_reply(engine, session, text))
    assert user_texts(engine)[0] == "[用户情绪：负面] 我好难过"  # same as turn 1, so its KV is reused


def test_reset_clears_history() -> None:
    engine, session = FakeEngine(), ChatSession()
    list(stream_reply(engine, TASKS["chat"], session, "hi", GenParams()))
    session.reset()
    assert session.history == []


def test_abandoned_stream_does_not_add_a_half_turn() -> None:
    engine, session = FakeEngine(), ChatSession()
    engine.enqueue("a long reply")
    stream = stream_reply(engine, TASKS["chat"], session, "hi", GenParams())
    next(stream)
    stream.close()
    assert session.history == []


def nearest_example(engine: FakeEngine) -> str:
    """The example answer right before the conversation: the last fixed message of the prompt."""
    return [s.text for s in engine.prompts[-1].prefix if not s.trusted][-1]


def test_in_a_conversation_the_examples_in_the_messages_language_come_last() -> None:
    engine, chat = FakeEngine(), TASKS["chat"]
    answers = {m.content for m in chat.fixed_messages() if m.role == "assistant"}
    list(stream_reply(engine, chat, ChatSession(), "今天好累", GenParams()))
    zh = nearest_example(engine)
    list(stream_reply(engine, chat, ChatSession(), "I'm so tired today", GenParams()))
    en = nearest_example(engine)
    assert {zh, en} <= answers
    assert cjk_share(zh) > 0.5 and cjk_share(en) == 0
    assert len(engine.prompts[-1].prefix) == len(engine.prompts[-2].prefix)  # the same examples, reordered


def test_a_single_turn_tasks_examples_keep_their_order() -> None:
    engine, task = FakeEngine(), TASKS["keywords"]
    for text in ["今天去颐和园划船", "We rowed a boat today"]:
        list(stream_reply(engine, task, ChatSession(), text, GenParams()))
    assert engine.prompts[0].prefix == engine.prompts[1].prefix


def test_an_english_message_gets_the_english_tag() -> None:
    engine, session = FakeEngine(negative), ChatSession()
    analyze_and_reply(engine, session, "I lost my keys")
    assert user_texts(engine)[-1] == "[User mood: negative] I lost my keys"


def test_the_chat_examples_carry_the_tag_the_combined_flow_puts_before_a_message() -> None:
    labels = TASKS["sentiment"].labels or []
    for ex in TASKS["chat"].examples:
        text = ex.input.split("] ", 1)[-1]
        lang = "zh" if cjk_share(text) > 0.5 else "en"
        tags = {chat.SENTIMENT_TAG[lang].format(label=lb.display, label_en=lb.id, text=text) for lb in labels}
        assert ex.input in tags, ex.input
