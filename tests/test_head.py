"""The optional learned head: training, the file format, and how classify applies it (fake engine)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
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


def test_a_head_is_used_only_where_the_engine_can_feed_it(tmp_path: Path) -> None:
    weight = np.array([[0.0, 5.0, 0.0, 0.0], [0.0, -5.0, 0.0, 0.0]])
    info = {"probe_layer": 12, "model": "fake-model"}
    head = LinearHead(["positive", "negative"], np.zeros(4), np.ones(4), weight, np.zeros(2), info)
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    task = load_task_file(sentiment_with_head(tasks_dir, head))
    engine = FakeEngine(scorer)
    # heads are on by default: an engine without the head's layer gives the prompt's answer, not an error
    assert classify(engine, task, "好", use_head=True).method == "prompt"
    engine.probe_layer = 12
    assert classify(engine, task, "好", use_head=True).method == "prompt+head"
    engine.info = replace(engine.info, model="another-model")  # features of another model mean nothing to it
    assert classify(engine, task, "好", use_head=True).method == "prompt"
    # the service asks the engine it loads for the heads' layer, only when heads are in use (the default)
    from allinone.service import TaskService
    from allinone.settings import Settings

    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir, use_heads=True)).probe_layer() == 12
    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir, use_heads=False)).probe_layer() is None
    assert (
        TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir, model="openai:m", use_heads=True)).probe_layer()
        is None
    )
    assert TaskService(Settings(home=tmp_path, tasks_dir=tasks_dir), probe_layer=3).probe_layer() == 3


def test_mixing_and_gating_fall_back_to_the_prompt_where_the_head_is_unsure(tmp_path: Path) -> None:
    # hidden = [prompt length, count of 好]: z = 2 * count - 3, so one 好 gives P(positive) = 0.27, three 0.95
    weight = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    info = {"probe_layer": None, "model": "fake-model", "mix": 0.5, "gate": 0.8}
    head = LinearHead(["positive", "negative"], np.zeros(4), np.ones(4), weight, np.array([-1.5, 1.5]), info)
    task = load_task_file(sentiment_with_head(tmp_path, head))
    unsure = classify(FakeEngine(scorer), task, "好", use_head=True)
    assert unsure.probabilities == pytest.approx({"positive": 0.7, "negative": 0.3})  # the prompt's (gate)
    sure = classify(FakeEngine(scorer), task, "好好好", use_head=True)
    p_head = 1 / (1 + math.exp(-3.0))
    assert sure.probabilities["positive"] == pytest.approx(0.5 * p_head + 0.5 * 0.7)  # mixed half and half
    assert sure.method == "prompt+head"


def test_toward_the_prompt_a_strong_penalty_keeps_the_label_scores_and_drops_the_rest() -> None:
    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(400, 6))
    prompt = rng.normal(size=(400, 1))
    golds = ["a" if row[0] + 0.3 * p[0] > 0 else "b" for row, p in zip(hidden, prompt, strict=True)]
    x = np.hstack([hidden, prompt, -prompt]).tolist()
    free = train_head(x, golds, ["a", "b"], l2=1e6, free=2)
    assert np.abs(free.weight[0, :6]).max() < 1e-3 < np.abs(free.weight[0, 6:]).max()
    plain = train_head(x, golds, ["a", "b"], l2=1e6)
    assert np.abs(plain.weight).max() < 1e-3  # penalising every weight shrinks toward a constant instead


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


def test_the_head_is_on_by_default_and_no_head_gives_the_prompts_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weight = np.array([[0.0, 5.0, 0.0, 0.0], [0.0, -5.0, 0.0, 0.0]])
    head = LinearHead(["positive", "negative"], np.zeros(4), np.ones(4), weight, np.array([-5.0, 5.0]), {})
    sentiment_with_head(tmp_path, head)
    monkeypatch.delenv("ALLINONE_USE_HEADS", raising=False)
    patch_cli_engine(monkeypatch, FakeEngine(scorer), tmp_path)
    args = ["run", "sentiment", "一般般", "--json", "--tasks-dir", str(tmp_path)]
    default = json.loads(CliRunner().invoke(cli_module.cli, args).output)
    assert default["method"] == "prompt+head" and default["label"] == "negative"
    plain = json.loads(CliRunner().invoke(cli_module.cli, [*args, "--no-head"]).output)
    assert plain["method"] == "prompt" and plain["label"] == "positive"
    monkeypatch.setenv("ALLINONE_USE_HEADS", "0")
    assert json.loads(CliRunner().invoke(cli_module.cli, args).output)["method"] == "prompt"


def test_a_head_on_a_layers_mean_alone_reads_only_that_part_of_the_hidden_state() -> None:
    # the engine gives [mean after the probe layer (2 dims here), final state (2 dims)]; the head was trained on
    # the mean and the label score only, so the final state must not move its answer
    weight = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    info = {"probe_layer": 18, "features": "mean18"}
    head = LinearHead(["positive", "negative"], np.zeros(3), np.ones(3), weight, np.zeros(2), info)
    assert not head.uses_final
    a = head.probabilities([1.0, 0.0, 5.0, -5.0], [0.0])
    b = head.probabilities([1.0, 0.0, -9.0, 9.0], [0.0])
    assert a == b and a["positive"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    both = replace(head, info={"probe_layer": 18, "features": "mean18+final"})
    assert both.uses_final
    with pytest.raises(ValueError):  # mean + final is 4 dims + 1 score, not the 3 it was trained on
        both.probabilities([1.0, 0.0, 5.0, -5.0], [0.0])
