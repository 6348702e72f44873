"""The optional learned head: training, the file format, and how classify applies it (fake engine)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from allinone import cli as cli_module
from allinone.classify import classify
from allinone.errors import TaskDefinitionError
from allinone.head import LinearHead, train_head
from allinone.tasks import load_task_file, load_tasks
from tests.fakes import FakeEngine, patch_cli_engine


def test_training_separates_separable_data_and_the_file_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    golds = ["up" if row[0] + 0.5 * row[3] > 0 else "down" for row in x]
    head = train_head(x.tolist(), golds, ["up", "down"], l2=0.1)
    assert head.info["train_accuracy"] >= 0.97
    head.save(tmp_path / "h.json")
    loaded = LinearHead.load(tmp_path / "h.json")
    probs = loaded.probabilities(x[0, :4].tolist(), [x[0, 4]])
    assert max(probs, key=probs.__getitem__) == golds[0]
    assert sum(probs.values()) == pytest.approx(1.0)


def test_a_broken_head_file_is_a_task_error(tmp_path: Path) -> None:
    (tmp_path / "h.json").write_text('{"labels": ["a"]}')
    with pytest.raises(TaskDefinitionError, match="not a readable head file"):
        LinearHead.load(tmp_path / "h.json")


def sentiment_with_head(tmp_path: Path, head: LinearHead | None) -> Path:
    text = (load_tasks()["sentiment"].source or Path()).read_text(encoding="utf-8")
    (tmp_path / "sentiment.yaml").write_text(text + "head: sentiment.head.json\n", encoding="utf-8")
    if head is not None:
        head.save(tmp_path / "sentiment.head.json")
    return tmp_path / "sentiment.yaml"


def test_a_declared_head_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match=r"key 'head': file not found"):
        load_task_file(sentiment_with_head(tmp_path, None))


def scorer(prompt: str, word: str) -> float:
    return math.log(0.7 if word == "正面" else 0.3)  # the prompt alone always says positive


def test_classify_applies_the_head_and_keeps_the_prompt_probabilities(tmp_path: Path) -> None:
    # fake hidden state = [prompt length, count of 好 in the input]; this head says negative unless 好 appears
    weight = np.array([[0.0, 5.0, 0.0, 0.0], [0.0, -5.0, 0.0, 0.0]])
    head = LinearHead(["positive", "negative"], np.zeros(4), np.ones(4), weight, np.array([-5.0, 5.0]), {})
    task = load_task_file(sentiment_with_head(tmp_path, head))
    engine = FakeEngine(scorer)
    negative = classify(engine, task, "一般般", use_head=True)
    assert negative.method == "prompt+head" and negative.label == "negative"
    assert negative.prompt_probabilities == pytest.approx({"positive": 0.7, "negative": 0.3})
    assert negative.display == "😡 LLM 情感判断: 负面"
    assert classify(engine, task, "好好好", use_head=True).label == "positive"
    plain = classify(engine, task, "一般般")
    assert plain.method == "prompt" and plain.label == "positive" and plain.prompt_probabilities is None


def test_train_head_command_writes_a_head_the_task_can_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(scorer)
    patch_cli_engine(monkeypatch, engine, tmp_path)
    rows = [{"text": "好" * (i % 3 + 1), "label": "positive"} for i in range(10)]
    rows += [{"text": "差" * (i % 3 + 1), "label": "negative"} for i in range(10)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "heads" / "sentiment.head.json"
    result = CliRunner().invoke(cli_module.cli, ["train-head", "sentiment", str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "train accuracy 1.0000" in result.output
    head = LinearHead.load(out)
    assert head.labels == ["positive", "negative"] and head.info["n_train"] == 20


def test_a_head_reads_the_layer_it_was_trained_on(tmp_path: Path) -> None:
    weight = np.array([[0.0, 5.0, 0.0, 0.0], [0.0, -5.0, 0.0, 0.0]])
    head = LinearHead(["positive", "negative"], np.zeros(4), np.ones(4), weight, np.zeros(2), {"probe_layer": 12})
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    task = load_task_file(sentiment_with_head(tasks_dir, head))
    engine = FakeEngine(scorer)
    with pytest.raises(TaskDefinitionError, match="layer 12, but the engine probes None"):
        classify(engine, task, "好", use_head=True)
    engine.probe_layer = 12
    assert classify(engine, task, "好", use_head=True).method == "prompt+head"
    # the service asks the engine it loads for the heads' layer, only when heads are in use
    from allinone.service import TaskService
    from allinone.settings import Settings

    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir, use_heads=True)).probe_layer() == 12
    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir)).probe_layer() is None
    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir), probe_layer=3).probe_layer() == 3


def test_training_finds_the_penalised_optimum_for_two_and_three_labels() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    two = ["a" if row[1] - row[2] > 0 else "b" for row in x]
    head = train_head(x.tolist(), two, ["a", "b"], l2=1.0)
    assert head.info["train_accuracy"] >= 0.97
    # at the optimum the penalised gradient vanishes: X^T (p - y) + l2 * w = 0 (binary model w = 2 * weight[0])
    z = (x - head.mean) / head.scale
    w, b = 2 * head.weight[0], 2 * head.bias[0]
    p = 1 / (1 + np.exp(-(z @ w + b)))
    y = np.asarray([g == "a" for g in two], dtype=float)
    assert np.abs(z.T @ (p - y) + 1.0 * w).max() < 1e-6 and abs((p - y).sum()) < 1e-6
    # probabilities are the binary model's sigmoid, not an over-confident doubled logit
    probs = head.probabilities(x[0, :5].tolist(), [x[0, 5]])
    assert probs["a"] == pytest.approx(p[0])
    three = ["a" if row[0] > 0.5 else "b" if row[0] < -0.5 else "c" for row in x]
    head3 = train_head(x.tolist(), three, ["a", "b", "c"], l2=0.01)
    assert head3.weight.shape == (3, 6) and head3.info["train_accuracy"] >= 0.9
