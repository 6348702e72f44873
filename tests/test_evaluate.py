"""eval and bulk classify commands on a fake engine: metrics, file errors with line numbers, resuming."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from allinone import cli as cli_module
from allinone.errors import InvalidInput
from allinone.evaluate import Prediction, metrics
from tests.fakes import FakeEngine, patch_cli_engine


def scorer(prompt: str, word: str) -> float:
    """Positive when the user's text contains 好, negative otherwise."""
    positive = "好" in prompt.rsplit("<user>", 1)[-1]
    return math.log(0.9 if (word == "正面") == positive else 0.1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEngine:
    engine = FakeEngine(scorer)
    patch_cli_engine(monkeypatch, engine, tmp_path)
    return engine


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_module.cli, list(args))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"text": "很好", "label": "positive"},
    {"text": "太差", "label": "negative"},
    {"text": "好评", "label": "negative"},  # the fake gets this one wrong
    {"text": "一般般", "label": "positive"},  # and this one
    {"text": "好极了", "label": "positive"},
]


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    preds = [
        Prediction(1, "positive", "positive", {"positive": 0.9, "negative": 0.1}),
        Prediction(2, "positive", "negative", {"positive": 0.4, "negative": 0.6}),
        Prediction(3, "negative", "negative", {"positive": 0.2, "negative": 0.8}),
        Prediction(4, "negative", "negative", {"positive": 0.3, "negative": 0.7}),
    ]
    m = metrics(preds, ["positive", "negative"], seconds=2.0)
    assert m.accuracy == 0.75 and m.texts_per_s == 2.0
    assert m.confusion == {"positive": {"positive": 1, "negative": 1}, "negative": {"positive": 0, "negative": 2}}
    assert m.per_label["positive"]["precision"] == 1.0 and m.per_label["positive"]["recall"] == 0.5
    assert m.per_label["negative"]["precision"] == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)
    # bins: 0.9 -> right; 0.6 -> wrong; 0.8, 0.7 -> right
    assert m.ece == pytest.approx((abs(0.9 - 1) + abs(0.6 - 0) + abs(0.8 - 1) + abs(0.7 - 1)) / 4)


def test_eval_prints_metrics_and_writes_json_and_predictions(fake: FakeEngine, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    result = invoke("eval", "sentiment", str(data), "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "accuracy 0.6000" in result.output and "confusion" in result.output
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["accuracy"] == 0.6 and saved["n"] == 5
    assert 0 < saved["seconds"] < 60 and saved["texts_per_s"] > 0.1  # timed from the start of the loop
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").open()]
    assert [p["label"] for p in preds] == ["positive", "negative", "positive", "negative", "positive"]
    assert preds[0]["probabilities"]["positive"] == pytest.approx(0.9)


def test_eval_reads_csv_with_a_label_map(fake: FakeEngine, tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("review,y\n很好,1\n太差,0\n", encoding="utf-8")
    result = invoke(
        "eval",
        "sentiment",
        str(csv),
        "--text-field",
        "review",
        "--label-field",
        "y",
        "--label-map",
        "1=positive",
        "--label-map",
        "0=negative",
    )
    assert result.exit_code == 0, result.output
    assert "accuracy 1.0000" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "好", "label": "positive"}\n{not json}\n', r"d\.jsonl:2: invalid JSON"),
        ('{"text": "好", "label": "positive"}\n{"label": "negative"}\n', r"d\.jsonl:2: missing field 'text'"),
        ('{"text": "好", "label": "neutral"}\n', r"d\.jsonl:1: label 'neutral' is not one of the task's labels"),
        ('{"text": "  ", "label": "positive"}\n', r"d\.jsonl:1: field 'text' is empty"),
    ],
)
def test_bad_files_are_one_line_errors_with_the_line_number(
    fake: FakeEngine, tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "d.jsonl").write_text(content, encoding="utf-8")
    result = invoke("eval", "sentiment", str(tmp_path / "d.jsonl"))
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output
    assert fake.prompts == []  # nothing ran before the file was checked


def test_missing_file_and_unknown_extension_are_clear_errors(fake: FakeEngine, tmp_path: Path) -> None:
    assert "cannot open" in invoke("eval", "sentiment", str(tmp_path / "nope.jsonl")).output
    (tmp_path / "d.txt").write_text("x")
    result = invoke("eval", "sentiment", str(tmp_path / "d.txt"))
    assert result.exit_code == 2 and "unsupported file type" in result.output


def test_bulk_classify_writes_rows_back_and_resumes(fake: FakeEngine, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": r["text"]} for i, r in enumerate(ROWS)])
    out = tmp_path / "out.jsonl"
    first = invoke("classify", "sentiment", str(data), "-o", str(out), "--limit", "2")
    assert first.exit_code == 0, first.output
    with out.open("a") as f:
        f.write('{"id": 2, "te')  # a run killed mid-write leaves half a line
    calls_before = len(fake.prompts)
    second = invoke("classify", "sentiment", str(data), "-o", str(out))
    assert second.exit_code == 0, second.output
    assert len(fake.prompts) - calls_before == 3  # only the rows not yet done
    rows = [json.loads(line) for line in out.open()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["predicted_label"] == "positive" and set(rows[0]["probabilities"]) == {"positive", "negative"}
    third = invoke("classify", "sentiment", str(data), "-o", str(out))
    assert "already done" in third.output and len([*out.open()]) == 5


def test_bulk_classify_to_csv(fake: FakeEngine, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.csv"
    assert invoke("classify", "sentiment", str(data), "-o", str(out)).exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text,label,predicted_label,p_positive,p_negative"
    assert len(lines) == 3 and lines[1].startswith("很好,")


def test_eval_and_classify_score_in_batches_of_batch_size(fake: FakeEngine, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    single = invoke("eval", "sentiment", str(data), "--batch-size", "1")
    assert single.exit_code == 0, single.output
    assert fake.batches == []  # one at a time
    batched = invoke("eval", "sentiment", str(data), "--batch-size", "2")
    assert batched.exit_code == 0, batched.output
    assert fake.batches == [2, 2]  # and the last row alone
    assert re.search(r"accuracy 0\.6000", batched.output) and re.search(r"accuracy 0\.6000", single.output)
    fake.batches.clear()
    out = tmp_path / "out.jsonl"
    assert invoke("classify", "sentiment", str(data), "-o", str(out), "--batch-size", "3").exit_code == 0
    assert fake.batches == [3, 2]
    assert [json.loads(line)["predicted_label"] for line in out.open()] == [
        "positive",
        "negative",
        "positive",
        "negative",
        "positive",
    ]
    assert invoke("eval", "sentiment", str(data), "--batch-size", "0").exit_code == 2


def test_batch_functions_give_the_python_api_plain_results(tmp_path: Path) -> None:
    from allinone.batch import classify_file, evaluate
    from allinone.service import TaskService
    from allinone.settings import Settings

    service = TaskService(Settings(home=tmp_path), FakeEngine(scorer))
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    result = evaluate(service, "sentiment", data, limit=4)
    assert result.metrics.n == 4 and result.metrics.accuracy == 0.5
    assert [p.line for p in result.predictions] == [1, 2, 3, 4]
    out = tmp_path / "out.jsonl"
    first = classify_file(service, "sentiment", data, out, limit=2)
    assert (first.total, first.resumed_from, first.already_done) == (2, 0, False)
    again = classify_file(service, "sentiment", data, out)
    assert (again.total, again.resumed_from) == (5, 2) and len(out.read_text().splitlines()) == 5
    with pytest.raises(InvalidInput, match=r"\.jsonl or \.csv"):
        classify_file(service, "sentiment", data, tmp_path / "out.txt")
    with pytest.raises(InvalidInput, match="generate task, not classify"):
        evaluate(service, "chat", data)
