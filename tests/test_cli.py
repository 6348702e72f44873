"""CLI behaviour on a fake engine: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from allinone import cli as cli_module
from tests.fakes import FakeEngine, patch_cli_engine


def scorer(prompt: str, word: str) -> float:
    return math.log(0.97) if word == "负面" else math.log(0.03)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEngine:
    engine = FakeEngine(scorer)
    patch_cli_engine(monkeypatch, engine, tmp_path)
    return engine


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli_module.cli, list(args), input=input)


def test_run_sentiment_prints_the_display_line_with_probabilities(fake: FakeEngine) -> None:
    result = invoke("run", "sentiment", "这家酒店服务太差了，再也不来了")
    assert result.exit_code == 0
    assert result.output.strip() == "😡 LLM 情感判断: 负面   (negative 0.97 · positive 0.03)"


def test_run_json_and_stdin(fake: FakeEngine) -> None:
    result = invoke("run", "sentiment", "-", "--json", input="太差了")
    data = json.loads(result.output)
    assert data["label"] == "negative" and data["probabilities"]["negative"] == pytest.approx(0.97)
    assert {"prompt_tokens", "cached_tokens", "completion_tokens"} <= set(data["usage"])


def test_run_generate_task_streams_text(fake: FakeEngine) -> None:
    fake.enqueue("你好呀")
    result = invoke("run", "chat", "你好", "--max-tokens", "5", "--seed", "1")
    assert result.exit_code == 0 and result.output.strip() == "你好呀"
    assert fake.params[-1].max_tokens == 5 and fake.params[-1].seed == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch", "hi"], "unknown task 'nosuch'"),
        (["run", "sentiment", "   "], "请输入文本"),
        (["tasks", "show", "nosuch"], "unknown task 'nosuch'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(fake: FakeEngine, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.output


def test_chat_repl_shows_sentiment_then_reply_and_keeps_history(fake: FakeEngine) -> None:
    fake.enqueue("抱抱你", "我记得")
    result = invoke("chat", input="我好难过\n你记得吗\n/reset\n/exit\n")
    assert result.exit_code == 0
    out = result.output
    assert out.count("😡 LLM 情感判断: 负面") == 2
    assert out.index("😡 LLM 情感判断: 负面") < out.index("抱抱你") < out.index("我记得")
    second_prompt = [s.text for s in fake.prompts[-1].suffix if not s.trusted]
    assert "听起来真的抱抱你" in second_prompt  # the first reply, with its start, is in the second turn's context
    assert "history cleared" in out


def test_tasks_list_and_show(fake: FakeEngine) -> None:
    listing = invoke("tasks")
    assert listing.exit_code == 0 and "sentiment" in listing.output and "chat" in listing.output
    shown = invoke("tasks", "show", "sentiment")
    assert "display_template" in shown.output and "sentiment.yaml" in shown.output


def test_models_lists_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLINONE_HOME", str(tmp_path))
    result = invoke("models", "--json")
    rows = json.loads(result.output)
    assert rows[0]["ref"] == "default" and rows[0]["size"] == 491_400_064
    assert rows[0]["path"].startswith(str(tmp_path))


def test_a_bad_setting_in_the_environment_is_one_line_naming_the_variable_with_exit_code_2(
    fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLINONE_WIDEN", "maybe")
    monkeypatch.setenv("ALLINONE_PARALLEL", "many")
    result = invoke("run", "sentiment", "很好")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: ALLINONE_")
    assert "ALLINONE_WIDEN='maybe': Input should be 'on' or 'off'" in result.output
    assert "ALLINONE_PARALLEL='many': Input should be a valid integer" in result.output
