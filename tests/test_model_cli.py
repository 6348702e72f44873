"""The edges on the real default model: /chat continuing a session, bulk `classify` resuming, `train-head --exclude`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from allinone import cli as cli_module
from allinone.classify import classify
from allinone.engines import Engine
from allinone.head import LinearHead
from allinone.server import create_app
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import load_task_file, load_tasks
from tests.fakes import patch_cli_engine

pytestmark = pytest.mark.model

DATA = Path(__file__).parent / "data" / "sentiment_domains.jsonl"


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli_module.cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_chat_endpoint_continues_a_session_the_second_turn_sees_the_first(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    tasks_dir = tmp_path / "tasks"  # the built-in chat task with short replies, to keep the test quick
    tasks_dir.mkdir()
    chat_yaml = (load_tasks()["chat"].source or Path()).read_text(encoding="utf-8")
    assert "max_tokens: 256" in chat_yaml
    (tasks_dir / "chat.yaml").write_text(chat_yaml.replace("max_tokens: 256", "max_tokens: 48"), encoding="utf-8")
    app_settings = settings.model_copy(
        update={"home": tmp_path, "log_file": tmp_path / "requests.log", "tasks_dir": tasks_dir, "seed": 7}
    )
    app = create_app(app_settings, TaskService(app_settings, engine))  # the model is loaded: no lifespan needed
    client = TestClient(app, base_url="http://127.0.0.1")  # the Host a loopback-bound server answers to
    first = client.post("/chat", json={"text": "你好，我叫小林，是一名护士。"})
    assert first.status_code == 200, first.text
    sid, first_reply = first.json()["session_id"], first.json()["reply"]
    assert sid and first_reply.strip()
    second = client.post("/chat", json={"text": "我刚才说我是做什么工作的？", "session_id": sid})
    assert second.status_code == 200, second.text
    assert second.json()["session_id"] == sid and second.json()["reply"].strip()
    turns = client.get(f"/v1/sessions/{sid}").json()["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0]["content"] == "你好，我叫小林，是一名护士。" and turns[1]["content"] == first_reply
    # the first exchange is in the second prompt: it is longer by at least the first turn's text and reply
    first_usage, second_usage = first.json()["usage"], second.json()["usage"]
    assert second_usage["prompt_tokens"] > first_usage["prompt_tokens"] + first_usage["completion_tokens"]
    assert second_usage["cached_tokens"] > 0  # and the shared start was reused, not recomputed


def test_classify_command_labels_a_jsonl_file_and_resumes(
    service: TaskService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    patch_cli_engine(monkeypatch, service.engine, tmp_path)
    texts = [
        ("这家酒店服务太差了，房间又脏又吵，再也不来了。", "negative"),
        ("东西很好用，物流也快，非常满意！", "positive"),
        ("等了一个半小时才送到，汤都洒了，差评。", "negative"),
        ("老师讲得特别清楚，孩子很喜欢上课。", "positive"),
    ]
    data = _jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, (t, _) in enumerate(texts)])
    out = tmp_path / "out.jsonl"
    _invoke("classify", "sentiment", str(data), "-o", str(out), "--limit", "2")
    first_two = out.read_text(encoding="utf-8")
    assert len(first_two.splitlines()) == 2
    assert "wrote 4 rows" in _invoke("classify", "sentiment", str(data), "-o", str(out)).output
    assert out.read_text(encoding="utf-8").startswith(first_two)  # resumed: the rows done are kept as they were
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    for row, (_, gold) in zip(rows, texts, strict=True):
        assert set(row["probabilities"]) == {"positive", "negative"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert row["predicted_label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert row["predicted_label"] == gold, row  # clear-cut texts
    assert "already done" in _invoke("classify", "sentiment", str(data), "-o", str(out)).output


def test_train_head_with_exclude_writes_a_head_the_task_loads_and_uses(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[TaskService] = []

    def service(model: str | None, tasks_dir: Path | None, probe_layer: int | None = None) -> TaskService:
        # the command's own engine (its probe layer gives the hidden states), sized like the session's
        made.append(TaskService(cli_module._settings(n_ctx=settings.n_ctx), probe_layer=probe_layer))
        return made[-1]

    monkeypatch.setattr(cli_module, "_service", service)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()][:24]
    train = _jsonl(tmp_path / "train.jsonl", rows)
    held_out = _jsonl(tmp_path / "dev.jsonl", rows[:4])  # these 4 texts must not be trained on
    heads = tmp_path / "heads"
    out = heads / "sentiment.head.json"
    args = ["train-head", "sentiment", str(train), "--exclude", str(held_out), "--probe-layer", "15", "-o", str(out)]
    try:
        assert "trained on 20 texts" in _invoke(*args).output
        (trained,) = made
        head = LinearHead.load(out)
        assert head.labels == ["positive", "negative"] and head.info["n_train"] == 20
        assert head.info["excluded"] == ["dev.jsonl"] and head.info["model"] == trained.engine.info.model
        assert head.probe_layer == 15  # the features it was trained on
        sentiment_yaml = (load_tasks()["sentiment"].source or Path()).read_text(encoding="utf-8")
        assert "head: sentiment.head.json" in sentiment_yaml  # the file name the task points at
        (heads / "sentiment.yaml").write_text(sentiment_yaml, encoding="utf-8")
        task = load_task_file(heads / "sentiment.yaml")
        answer = classify(trained.engine, task, "这家酒店服务太差了，再也不来了。", use_head=True)
        assert answer.method == "prompt+head" and answer.label == "negative"
    finally:
        for s in made:
            s.engine.close()
