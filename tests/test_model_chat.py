"""The default chat task on the real model: replies in the message's language, without boilerplate or code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allinone.chat import ChatSession
from allinone.classify import Classification
from allinone.replycheck import check_reply
from allinone.router import Router

pytestmark = pytest.mark.model

TRANSCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "readme_transcript.json"


def reply_to(router: Router, session: ChatSession, text: str, seed: int) -> tuple[str, str | None]:
    events = list(router.analyze_and_reply(session, text, {"seed": seed}))
    assert isinstance(events[0], Classification)
    chunks = [e for e in events[1:] if not isinstance(e, Classification)]
    return "".join(c.text for c in chunks), chunks[-1].finish_reason


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
    router: Router, text: str, seed: int
) -> None:
    reply, finish = reply_to(router, ChatSession(), text, seed)
    failed = check_reply(text, reply, finish).failed
    assert not {"language", "boilerplate", "code", "tag"} & set(failed), (failed, reply)


def test_a_follow_up_in_the_other_language_is_answered_in_that_language(router: Router) -> None:
    session = ChatSession()
    reply_to(router, session, "今天面试通过了，好开心！", 5)
    reply, finish = reply_to(router, session, "Thanks! Any tips for my first week?", 5)
    assert "language" not in check_reply("Thanks! Any tips for my first week?", reply, finish).failed, reply


def test_the_readme_transcript_is_what_this_version_answers(router: Router) -> None:
    data = json.loads(TRANSCRIPT.read_text(encoding="utf-8"))
    session = ChatSession()
    for turn in data["conversations"][0]:
        assert reply_to(router, session, turn["user"], data["seed"])[0] == turn["reply"]
