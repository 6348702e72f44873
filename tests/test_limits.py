"""Input limits on the fake engine: over-long inputs are cut (head + tail, reported) or refused with 413 by
the task's policy, in characters and in tokens; long chat histories are trimmed oldest first to fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from allinone.chat import ChatSession, Turn, stream_reply
from allinone.engines.base import GenParams
from allinone.errors import InputTooLong
from allinone.server import create_app
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import builtin_dir, load_tasks
from allinone.tasks.model import Truncation
from tests.fakes import FakeEngine

TASKS = load_tasks()
BIG = "开头" + "很长的文字。" * 20_000 + "结尾"  # 120 K characters


def negative(prompt: str, word: str) -> float:
    return math.log(0.9) if word == "负面" else math.log(0.1)


class WideTokens(FakeEngine):
    """Three tokens per character, as rare characters or emoji can take."""

    def count_tokens(self, text: str) -> int:
        return 3 * len(text)


def user_texts(engine: FakeEngine) -> list[str]:
    return [s.text for s in engine.prompts[-1].suffix if not s.trusted]


# --- Truncation ---------------------------------------------------------------------------------


def test_a_text_over_max_chars_keeps_its_head_and_tail() -> None:
    text, cut = Truncation(max_chars=100, start_share=0.3).apply("a" * 50 + "b" * 500 + "c" * 100)
    assert cut and text == "a" * 30 + "……" + "c" * 70


def test_a_text_within_the_limits_is_unchanged_and_not_counted() -> None:
    def never(text: str) -> int:
        raise AssertionError("a text that surely fits is not tokenized")

    assert Truncation(max_chars=100, max_tokens=400).apply("x" * 100, never) == ("x" * 100, False)


def test_a_text_over_max_tokens_is_cut_until_its_tokens_fit() -> None:
    limits = Truncation(max_chars=10_000, max_tokens=300)
    text, cut = limits.apply("好" * 5000, lambda t: 3 * len(t))
    assert cut and 3 * len(text) <= 300 and text.startswith("好") and "……" in text
    assert 3 * len(text) > 200  # not cut much further than needed


def test_the_reject_policy_refuses_with_the_size_and_the_limit() -> None:
    with pytest.raises(InputTooLong, match="5000 characters; this task accepts at most 100 characters"):
        Truncation(max_chars=100, policy="reject").apply("x" * 5000)
    with pytest.raises(InputTooLong, match="900 tokens; this task accepts at most 500 tokens"):
        Truncation(max_chars=1000, max_tokens=500, policy="reject").apply("x" * 300, lambda t: 3 * len(t))


def test_unset_limits_come_from_the_settings_and_never_exceed_half_the_context(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, max_input_chars=777, max_input_tokens=5000, n_ctx=4096)
    service = TaskService(settings, FakeEngine())
    sentiment = service.task("sentiment").truncation
    assert (sentiment.max_chars, sentiment.max_tokens) == (1000, 2048)  # its YAML's chars; tokens capped at n_ctx/2
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    data = yaml.safe_load((builtin_dir() / "translate.yaml").read_text(encoding="utf-8"))
    data.pop("truncation")
    (tasks_dir / "translate.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    service = TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir, max_input_chars=777, max_input_tokens=900), None)
    translate = service.task("translate").truncation
    assert (translate.max_chars, translate.max_tokens) == (777, 900)


# --- chat history -------------------------------------------------------------------------------


def _history(n_pairs: int, size: int) -> list[Turn]:
    return [
        Turn(role, f"{role}{i}:" + "字" * size)  # type: ignore[arg-type]
        for i in range(n_pairs)
        for role in ("user", "assistant")
    ]


def test_a_history_longer_than_the_context_drops_whole_oldest_pairs_and_keeps_the_system_prompt() -> None:
    engine = FakeEngine()  # 4096-token context, a token per character
    session = ChatSession(turns=_history(20, 500))  # 20 000 tokens of history
    chunks = list(stream_reply(engine, TASKS["chat"], session, "最后一句", GenParams(max_tokens=256)))
    texts = user_texts(engine)
    assert chunks[-1].trimmed_turns == 40 - (len(texts) - 1) > 0
    assert texts[0].startswith("user") and texts[-1] == "最后一句"  # starts at a user turn
    assert texts[-2].startswith("assistant19:")  # the newest turns are kept
    assert len(engine.prompts[-1].text) <= 4096 - 256
    assert engine.prompts[-1].prefix[1].text == TASKS["chat"].system  # system prompt kept
    assert len(session.turns) == 42  # the stored conversation keeps everything


def test_a_history_that_fits_is_left_whole_even_when_it_starts_with_the_assistant() -> None:
    engine = FakeEngine()
    session = ChatSession(turns=[Turn("assistant", "你好，我是助手"), *_history(2, 10)])
    chunks = list(stream_reply(engine, TASKS["chat"], session, "嗨", GenParams()))
    assert chunks[-1].trimmed_turns == 0 and len(user_texts(engine)) == 6


# --- over HTTP ----------------------------------------------------------------------------------


def make_client(tmp_path: Path, engine: FakeEngine, **overrides: Any) -> TestClient:
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", **overrides)
    return TestClient(
        create_app(settings, TaskService(settings, engine)), raise_server_exceptions=False, base_url="http://127.0.0.1"
    )


@pytest.mark.parametrize("path", ["/analyze", "/v1/tasks/sentiment", "/v1/tasks/intent", "/v1/tasks/auto"])
def test_a_120k_character_text_is_cut_and_classified_with_truncated_true(tmp_path: Path, path: str) -> None:
    engine = FakeEngine(negative)
    with make_client(tmp_path, engine) as c:
        r = c.post(path, json={"text": BIG})
    assert r.status_code == 200, r.text
    assert r.json()["truncated"] is True
    kept = user_texts(engine)[-1]
    assert kept.startswith("开头") and kept.endswith("结尾") and len(kept) <= 1002


@pytest.mark.parametrize("task", ["chat", "summary", "translate", "keywords"])
def test_a_120k_character_text_is_cut_for_generate_tasks_and_said_so(tmp_path: Path, task: str) -> None:
    engine = FakeEngine()
    engine.enqueue(*['["关键词"]' if task == "keywords" else "好的。"] * 2)
    with make_client(tmp_path, engine) as c:
        r = c.post(f"/v1/tasks/{task}", json={"text": BIG})
        stream = c.post(f"/v1/tasks/{task}", json={"text": BIG, "stream": True})
    assert r.status_code == 200 and r.json()["truncated"] is True, r.text
    assert '"truncated": true' in stream.text.split("event: done")[-1]
    assert len(user_texts(engine)[-1]) <= 4002


def test_the_openai_route_and_the_original_chat_route_report_the_cut(tmp_path: Path) -> None:
    with make_client(tmp_path, FakeEngine(negative)) as c:
        chat = c.post("/chat", json={"text": BIG}).json()
        completion = c.post(
            "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": BIG}]}
        )
        classified = c.post(
            "/v1/chat/completions", json={"model": "sentiment", "messages": [{"role": "user", "content": BIG}]}
        )
    assert chat["truncated"] is True
    assert completion.json()["truncated"] is True and classified.json()["truncated"] is True


def test_a_text_over_the_token_limit_is_cut_by_tokens(tmp_path: Path) -> None:
    engine = WideTokens(negative)
    with make_client(tmp_path, engine, max_input_tokens=600) as c:
        r = c.post("/v1/tasks/translate", json={"text": "好" * 1500})
    assert r.status_code == 200 and r.json()["truncated"] is True
    kept = user_texts(engine)[-1].count("好")
    assert 500 < 3 * kept <= 600


def test_a_task_with_the_reject_policy_answers_413_with_a_clear_message(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    data = yaml.safe_load((builtin_dir() / "sentiment.yaml").read_text(encoding="utf-8"))
    data["truncation"] = {"max_chars": 100, "policy": "reject"}
    data.pop("head", None)
    (tasks_dir / "sentiment.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with make_client(tmp_path, FakeEngine(negative), tasks_dir=tasks_dir) as c:
        r = c.post("/analyze", json={"text": "太差了" * 100})
        ok = c.post("/analyze", json={"text": "太差了"})
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["type"] == "input_too_long" and error["message_zh"] == "输入过长"
    assert error["message"] == "the input is 300 characters; this task accepts at most 100 characters: shorten it"
    assert ok.status_code == 200


def test_a_conversation_longer_than_the_context_is_trimmed_and_reports_it(tmp_path: Path) -> None:
    messages: list[dict[str, str]] = [{"role": "system", "content": "你是一个助手。"}]
    messages += [{"role": t.role, "content": t.content} for t in _history(10, 900)]
    messages.append({"role": "user", "content": "最后一句"})
    engine = FakeEngine()
    with make_client(tmp_path, engine) as c:
        r = c.post("/v1/chat/completions", json={"model": "chat", "messages": messages, "max_tokens": 64})
    assert r.status_code == 200, r.text
    assert r.json()["trimmed_turns"] >= 2
    assert engine.prompts[-1].prefix[1].text == "你是一个助手。"  # the caller's system prompt is kept
    assert user_texts(engine)[-1] == "最后一句"


def test_a_session_longer_than_the_context_keeps_going_and_reports_the_trim(tmp_path: Path) -> None:
    engine = FakeEngine()
    with make_client(tmp_path, engine) as c:
        replies = []
        for i in range(6):
            engine.enqueue("回" * 900)
            replies.append(c.post("/v1/tasks/chat", json={"text": f"第{i}句" + "问" * 900, "session_id": "long"}))
        turns = c.get("/v1/sessions/long").json()["turns"]
    assert [r.status_code for r in replies] == [200] * 6
    assert replies[0].json()["trimmed_turns"] == 0 and replies[-1].json()["trimmed_turns"] > 0
    assert len(turns) == 12  # the session itself keeps every turn
