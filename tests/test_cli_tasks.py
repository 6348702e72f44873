"""CLI for the task features on the fake engine: run auto, task options, structured output, validate, new."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from allinone import cli as cli_module
from allinone.service import TaskService
from allinone.settings import Settings
from tests.fakes import FakeEngine, patch_cli_engine


def summary_first(prompt: str, word: str) -> float:
    """Routes texts that ask for a summary (总结) to summary; content-free texts get no preference."""
    asks = "总结" in prompt.rsplit("<user>", 1)[-1]
    return math.log(0.9) if asks and word == "summary" else math.log(0.02)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEngine:
    engine = FakeEngine(summary_first)
    patch_cli_engine(monkeypatch, engine, tmp_path)
    return engine


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_module.cli, list(args))


def test_run_auto_prints_the_chosen_task_and_probability_then_the_result(fake: FakeEngine) -> None:
    fake.enqueue("地铁开通了。")
    result = invoke("run", "auto", "帮我总结：地铁3号线开通运营……")
    assert result.exit_code == 0, result.output
    first, second = result.output.strip().splitlines()
    assert first.startswith("auto → summary (") and second == "地铁开通了。"


def test_run_auto_json_carries_the_route(fake: FakeEngine) -> None:
    fake.enqueue("地铁开通了。")
    data = json.loads(invoke("run", "auto", "帮我总结：地铁开通", "--json").output)
    assert data["route"]["task"] == "summary" and data["task"] == "summary" and data["text"] == "地铁开通了。"
    assert sum(data["route"]["probabilities"].values()) == pytest.approx(1.0)


def test_run_structured_task_prints_parsed_json(fake: FakeEngine) -> None:
    fake.enqueue('[ "北京", "烤鸭" ]')
    result = invoke("run", "keywords", "在北京吃烤鸭")
    assert result.exit_code == 0 and json.loads(result.output) == ["北京", "烤鸭"]


def test_run_passes_task_options(fake: FakeEngine) -> None:
    fake.enqueue("Hello world.")
    result = invoke("run", "translate", "你好世界", "--option", "target=en", "-O", "max_tokens=5")
    assert result.exit_code == 2 and "['max_tokens'] are generation settings" in result.output
    assert "--max-tokens" in result.output
    result = invoke("run", "translate", "你好世界", "--option", "target=en", "--max-tokens", "5")
    assert result.exit_code == 0 and result.output.strip() == "Hello world."
    assert "Translate into English" in fake.prompts[-1].text and fake.params[-1].max_tokens == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "summary", "text", "--option", "length=huge"], "option 'length' of task 'summary'"),
        (["run", "summary", "text", "--option", "nonsense"], "--option expects KEY=VALUE"),
        (["run", "sentiment", "text", "--option", "length=short"], "has no option"),
    ],
)
def test_bad_options_are_one_line_errors(fake: FakeEngine, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_tasks_new_writes_files_that_validate(tmp_path: Path) -> None:
    for kind in ("classify", "generate"):
        result = invoke("tasks", "new", f"my_{kind}", "--kind", kind, "--dir", str(tmp_path))
        assert result.exit_code == 0, result.output
    text = (tmp_path / "my_generate.yaml").read_text(encoding="utf-8")
    assert "name: my_generate" in text and "# " in text and "options:" in text
    result = invoke("tasks", "validate", str(tmp_path))
    assert result.exit_code == 0 and result.output.count("ok: ") == 2
    assert invoke("tasks", "new", "my_generate", "--kind", "generate", "--dir", str(tmp_path)).exit_code == 2
    assert "not 'auto'" in invoke("tasks", "new", "auto", "--kind", "generate", "--dir", str(tmp_path)).output


def test_tasks_new_refuses_a_bad_name(tmp_path: Path) -> None:
    result = invoke("tasks", "new", "Bad Name", "--kind", "classify", "--dir", str(tmp_path))
    assert result.exit_code == 2 and "must be lowercase" in result.output


def test_tasks_validate_prints_every_problem_with_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("name: good\ndescription: x\nkind: generate\nsystem: s\n", encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ndescription: x\nkind: generate\nsystem: s\npromt: 1\nmulti_turn: maybe\n", encoding="utf-8"
    )
    result = invoke("tasks", "validate", str(tmp_path))
    assert result.exit_code == 1
    assert f"{bad}: key 'promt': unknown key" in result.output
    assert f"{bad}: key 'multi_turn':" in result.output and f"ok: {tmp_path / 'good.yaml'}" in result.output
    assert invoke("tasks", "validate", str(bad)).exit_code == 1


def test_builtin_tasks_all_validate() -> None:
    from allinone.tasks import builtin_dir

    result = invoke("tasks", "validate", str(builtin_dir()))
    assert result.exit_code == 0 and result.output.count("ok: ") >= 6


def test_the_server_serves_a_user_tasks_dir_at_start(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from allinone.server import create_app

    tasks = tmp_path / "tasks"
    assert invoke("tasks", "new", "urgency", "--kind", "classify", "--dir", str(tasks)).exit_code == 0
    settings = Settings(home=tmp_path, tasks_dir=tasks, log_file=tmp_path / "requests.log")
    engine = FakeEngine(lambda prompt, word: 0.0 if word == "urgent" else -3.0)
    with TestClient(create_app(settings, TaskService(settings, engine)), base_url="http://127.0.0.1") as client:
        assert "urgency" in [t["name"] for t in client.get("/v1/tasks").json()]
        answer = client.post("/v1/tasks/urgency", json={"text": "The server is down!"}).json()
    assert answer["label"] == "urgent"
