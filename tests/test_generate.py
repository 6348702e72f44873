"""Generate tasks on the fake engine: length limits, structured results, options through the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from allinone.engines.base import Chunk, Conversation, GenParams, Usage
from allinone.errors import InvalidInput, OutputInvalid
from allinone.generate import cut_at_sentence, limit_stream
from allinone.service import TaskService
from allinone.settings import Settings
from tests.fakes import FakeEngine


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def service(fake: FakeEngine, tmp_path: Path) -> TaskService:
    return TaskService(Settings(home=tmp_path), fake)


def chunks(*texts: str, finish: str = "stop") -> list[Chunk]:
    return [*(Chunk(t) for t in texts), Chunk("", finish, Usage(10, 0, len(texts)))]  # type: ignore[arg-type]


def test_cut_keeps_whole_sentences_within_the_limit() -> None:
    assert cut_at_sentence("第一句。第二句很长很长。", 8) == "第一句。"
    assert cut_at_sentence("One. Two three. Four.", 16) == "One. Two three."
    assert cut_at_sentence("Version 2.5 is out. More text here.", 22) == "Version 2.5 is out."
    assert cut_at_sentence("短", 5) == "短"


def test_cut_without_a_sentence_end_ends_a_word_with_an_ellipsis() -> None:
    cut = cut_at_sentence("The city council approved a budget that increases spending", 30)
    assert cut == "The city council approved a…" and len(cut) <= 30
    assert cut_at_sentence("一二三四五六七八九十", 5) == "一二三四…"
    clauses = "地铁开通运营，通勤时间缩短到四十分钟，首日客流超过十二万人次"
    assert cut_at_sentence(clauses, 24) == "地铁开通运营，通勤时间缩短到四十分钟…"
    assert cut_at_sentence("Budget approved, with buses and trams for everyone", 30) == "Budget approved, with buses…"


def test_limit_stream_sends_only_text_it_keeps_and_marks_a_cut_as_length() -> None:
    out = list(limit_stream(chunks("第一句", "。第二", "句。第三句还在继续", "很长。"), 12))
    assert [c.text for c in out if c.text] == ["第一句。", "第二句。"]
    assert out[-1].finish_reason == "length" and out[-1].usage and out[-1].usage.completion_tokens == 4


def test_limit_stream_passes_a_short_reply_whole() -> None:
    out = list(limit_stream(chunks("Short ", "reply. And", " the end"), 100))
    assert "".join(c.text for c in out) == "Short reply. And the end" and out[-1].finish_reason == "stop"


def test_limit_stream_drops_an_unfinished_sentence_when_tokens_ran_out() -> None:
    out = list(limit_stream(chunks("完整的一句。", "没写完的", finish="length"), 100))
    assert "".join(c.text for c in out) == "完整的一句。" and out[-1].finish_reason == "length"


def test_summary_length_is_enforced_through_the_router(service: TaskService, fake: FakeEngine) -> None:
    fake.enqueue("这是第一句摘要。这是第二句，它会超出长度限制。")
    reply = service.generate("summary", "一段很长的中文新闻。" * 5, options={"length": "12"})
    assert reply.text == "这是第一句摘要。" and len(reply.text) <= 12
    assert reply.options == {"length": "12", "language": "zh"} and reply.finish_reason == "length"
    assert fake.params[-1].max_tokens < 300  # derived from the 12 characters, not the task's 300
    assert "at most 12 characters" in fake.prompts[-1].text


def test_structured_task_sends_its_schema_and_returns_parsed_json(service: TaskService, fake: FakeEngine) -> None:
    fake.enqueue('["北京", "颐和园", "北京"]')
    reply = service.generate("keywords", "今天去北京颐和园。")
    assert reply.data == ["北京", "颐和园"]
    assert fake.params[-1].schema == service.task("keywords").output_schema


def test_structured_task_with_a_cut_reply_is_an_error(service: TaskService, fake: FakeEngine) -> None:
    fake.enqueue('["北京", "颐')
    with pytest.raises(OutputInvalid, match="not complete JSON"):
        service.generate("keywords", "今天去北京颐和园。")


def test_translate_direction_is_detected_or_given(service: TaskService, fake: FakeEngine) -> None:
    assert service.generate("translate", "你好世界").options == {"target": "en"}
    assert "Translate into English:" in fake.prompts[-1].text
    assert service.generate("translate", "hello world").options == {"target": "zh"}
    assert "Translate into Simplified Chinese:" in fake.prompts[-1].text
    service.generate("translate", "你好", options={"target": "zh"})
    assert "Translate into Simplified Chinese:" in fake.prompts[-1].text


def test_unknown_option_lists_the_tasks_own_options(service: TaskService) -> None:
    with pytest.raises(InvalidInput, match=r"unknown option.*colour.*options: length, language"):
        service.generate("summary", "text", options={"colour": "red"})


@pytest.mark.parametrize(
    ("option", "own", "override", "off", "chat"),
    [("repeat_penalty", 1.2, 1.05, 1.0, 1.0), ("dry_multiplier", 0.5, 0.0, 0.0, 0.8)],  # the chat task has DRY on
)
def test_a_penalty_comes_from_the_task_and_a_request_may_override_it(
    tmp_path: Path, fake: FakeEngine, option: str, own: float, override: float, off: float, chat: float
) -> None:
    (tmp_path / "echo.yaml").write_text(
        f"name: echo\ndescription: d\nkind: generate\nsystem: s\ngeneration:\n  {option}: {own}\n"
    )
    service = TaskService(Settings(home=tmp_path, tasks_dir=tmp_path), fake)
    service.generate("echo", "hi")
    service.generate("echo", "hi", options={option: override})
    service.generate("summary", "hi")  # a task without one: off
    service.generate("chat", "hi")
    assert [getattr(p, option) for p in fake.params] == [own, override, off, chat]


def test_warming_the_service_hands_the_engine_each_generate_tasks_reply_params(tmp_path: Path) -> None:
    """`serve` warms every task before it is ready; a generate task's warm-up carries its reply parameters, so that the
    engine can make then what its replies reuse (llama.cpp: the DRY sampler they clone)."""
    warmed: list[tuple[str, GenParams | None]] = []

    class Recording(FakeEngine):
        def warm(self, conversation: Conversation, params: GenParams | None = None) -> None:
            warmed.append((conversation.messages[-1].content, params))

    service = TaskService(Settings(home=tmp_path), Recording())
    service.warm(("你好",))
    chat = service.task("chat").generation
    assert chat is not None and chat.dry_multiplier > 0
    generate = [t for t in service.tasks.values() if t.kind == "generate"]
    assert len(warmed) == len(generate) >= 2
    assert all("你好" in text and params is not None for text, params in warmed)
    assert any(p and p.dry_multiplier == chat.dry_multiplier and p.max_tokens == chat.max_tokens for _, p in warmed)
