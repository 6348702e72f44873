from __future__ import annotations

from allinone.chat import ChatSession, stream_reply
from allinone.engines.base import GenParams
from allinone.events import Classified, Done, Event, TaskCall, Token
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import load_tasks
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
    assert user_texts(engine)[-1] == "[情感标签：负面] 我好难过"
    assert session.history[0] == {"role": "user", "content": "我好难过"}


def test_sentiment_tags_of_earlier_turns_stay_in_the_model_context() -> None:
    engine, session = FakeEngine(negative), ChatSession()
    for text in ["我好难过", "还是难过"]:
        list(analyze_and_reply(engine, session, text))
    assert user_texts(engine)[0] == "[情感标签：负面] 我好难过"  # same as turn 1, so its KV is reused


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
