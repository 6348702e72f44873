from __future__ import annotations

from allinone import chat
from allinone.chat import ChatSession, stream_reply
from allinone.engines.base import GenParams, Message
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
    """The conversation's texts in the last prompt, without a reply start (which follows the generation prompt)."""
    suffix = engine.prompts[-1].suffix
    end = max(i for i, s in enumerate(suffix) if s.trusted)
    return [s.text for s in suffix[:end] if not s.trusted]


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
    start = TASKS["chat"].reply_start["negative"]["zh"]  # the model continues it
    assert "".join(e.text for e in events if isinstance(e, Token)) == start + "抱抱你。"
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


def positive(prompt: str, word: str) -> float:
    return 0.0 if word == "正面" else -5.0


def test_a_reply_to_a_negative_message_starts_with_the_tasks_reply_start_in_its_language() -> None:
    starts = TASKS["chat"].reply_start["negative"]
    for text, lang, reply in [("我好难过", "zh", "难受。"), ("I failed my exam", "en", " hard.")]:
        engine, session = FakeEngine(negative), ChatSession()
        engine.enqueue(reply)
        events = analyze_and_reply(engine, session, text)
        tokens = [e.text for e in events if isinstance(e, Token)]
        assert tokens[0] == starts[lang] and "".join(tokens) == starts[lang] + reply
        assert engine.prompts[-1].suffix[-1].text == starts[lang] and not engine.prompts[-1].suffix[-1].trusted
        assert session.history[-1] == {"role": "assistant", "content": starts[lang] + reply}
        done = events[-1]
        assert isinstance(done, Done) and done.result.text == starts[lang] + reply


def test_no_reply_start_without_one_for_the_label_without_sentiment_or_on_an_engine_that_cannot_continue() -> None:
    assert "positive" not in TASKS["chat"].reply_start
    engine = FakeEngine(positive)
    list(analyze_and_reply(engine, ChatSession(), "我好开心"))
    assert engine.prompts[-1].suffix[-1].text == "<assistant>"
    engine = FakeEngine(negative)
    list(stream_reply(engine, TASKS["chat"], ChatSession(), "我好难过", GenParams()))  # no sentiment asked for
    assert engine.prompts[-1].suffix[-1].text == "<assistant>"
    engine = FakeEngine(negative)
    engine.continues_reply = False  # the openai engine
    engine.enqueue("抱抱你。")
    events = analyze_and_reply(engine, ChatSession(), "我好难过")
    assert engine.prompts[-1].suffix[-1].text == "<assistant>"
    assert "".join(e.text for e in events if isinstance(e, Token)) == "抱抱你。"


def test_a_callers_own_system_prompt_drops_the_reply_start_with_the_examples() -> None:
    engine = FakeEngine(negative)
    messages = [Message("system", "你是一个海盗。"), Message("user", "我好难过")]
    call = TaskCall("chat", "我好难过", messages=messages, sentiment="sentiment")
    list(TaskService(Settings(), engine).run(call))
    assert engine.prompts[-1].suffix[-1].text == "<assistant>"
