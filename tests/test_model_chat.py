"""The default chat task on the real model: replies in the message's language, without boilerplate or code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allinone.chat import ChatSession
from allinone.events import Classified, Done, TaskCall
from allinone.generate import Generated
from allinone.replycheck import check_reply
from allinone.service import TaskService
from allinone.settings import Settings

pytestmark = pytest.mark.model

TRANSCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "readme_transcript.json"


def reply_to(service: TaskService, session: ChatSession, text: str, seed: int) -> tuple[str, str | None]:
    events = list(service.run(TaskCall("chat", text, options={"seed": seed}, session=session, sentiment="sentiment")))
    assert isinstance(events[0], Classified)
    done = events[-1]
    assert isinstance(done, Done) and isinstance(done.result, Generated)
    return done.result.text, done.result.finish_reason


@pytest.mark.parametrize(
    "text",
    [
        "我的自行车昨天被偷了，好郁闷。",  # messages of neither half of the benchmark set
        "这次期末考试我考了全班第一！",
        "I burnt the dinner I spent all afternoon cooking.",
        "My little brother just got into his dream university!",
    ],
)
@pytest.mark.parametrize("seed", [3, 4])
def test_the_chat_task_answers_in_the_messages_language_without_boilerplate(
    service: TaskService, text: str, seed: int
) -> None:
    reply, finish = reply_to(service, ChatSession(), text, seed)
    failed = check_reply(text, reply, finish).failed
    assert not {"language", "boilerplate", "code", "tag"} & set(failed), (failed, reply)


def test_a_follow_up_in_the_other_language_is_answered_in_that_language(service: TaskService) -> None:
    session = ChatSession()
    reply_to(service, session, "今天面试通过了，好开心！", 5)
    reply, finish = reply_to(service, session, "Thanks! Any tips for my first week?", 5)
    assert "language" not in check_reply("Thanks! Any tips for my first week?", reply, finish).failed, reply


def test_the_readme_transcript_is_what_this_version_answers(settings: Settings) -> None:
    """The script's own steps on a fresh engine (replies depend on what the KV cache held before, so the shared
    test engine would not do). The sentiment lines must match exactly; a reply must match exactly on a CPU like
    the one that wrote the transcript, and elsewhere (other SIMD rounding can flip a sampled token) at least be a
    reply in the message's language that passes the checks."""
    import sys

    sys.path.insert(0, str(TRANSCRIPT.parents[2] / "benchmarks"))
    import readme_transcript

    data = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    fresh = TaskService(readme_transcript.settings())
    try:
        replayed = [readme_transcript.run(fresh, turns) for turns in readme_transcript.CONVERSATIONS]
    finally:
        fresh.engine.close()
    same_cpu = data.get("cpu") == readme_transcript.cpu_model()
    for got_turns, want_turns in zip(replayed, data["conversations"], strict=True):
        for got, want in zip(got_turns, want_turns, strict=True):
            assert (got["user"], got["sentiment"]) == (want["user"], want["sentiment"])
            if same_cpu:
                assert got["reply"] == want["reply"]
            else:
                failed = check_reply(got["user"], got["reply"], "stop").failed
                assert not {"language", "boilerplate", "code", "tag"} & set(failed), (failed, got["reply"])


@pytest.mark.parametrize(
    "text", ["我的自行车昨天被偷了，好郁闷。", "I burnt the dinner I spent all afternoon cooking."]
)
def test_a_reply_to_a_negative_message_starts_with_the_chat_tasks_reply_start(service: TaskService, text: str) -> None:
    start = service.task("chat").reply_start["negative"]["zh" if "自行车" in text else "en"]
    reply, finish = reply_to(service, ChatSession(), text, 3)
    assert reply.startswith(start) and len(reply) > len(start) + 4, reply  # the model wrote on from it
    assert not {"language", "boilerplate", "code", "tag"} & set(check_reply(text, reply, finish).failed), reply
