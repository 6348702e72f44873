from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from allinone.errors import TaskDefinitionError
from allinone.tasks import load_task_file, load_tasks
from allinone.tasks.loader import MAX_FILE_BYTES

GOOD = """\
name: mood
description: test task
kind: classify
system: classify it
labels:
  - {id: up, display: 好, emoji: "+", words: [好]}
  - {id: down, display: 坏, words: [坏, 差]}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_sentiment_and_chat_load_with_declared_labels() -> None:
    tasks = load_tasks()
    sentiment = tasks["sentiment"]
    assert sentiment.kind == "classify"
    assert [(lb.id, lb.display, lb.emoji) for lb in sentiment.labels or []] == [
        ("positive", "正面", "😄"),
        ("negative", "负面", "😡"),
    ]
    assert tasks["chat"].kind == "generate" and tasks["chat"].multi_turn


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "mood", GOOD + "promt: typo\n")
    with pytest.raises(TaskDefinitionError) as e:
        load_task_file(path)
    assert str(path) in str(e.value) and "'promt'" in str(e.value) and "unknown key" in str(e.value)


def test_bad_value_names_the_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "mood", GOOD.replace("kind: classify", "kind: clasify"))
    with pytest.raises(TaskDefinitionError, match=r"key 'kind'"):
        load_task_file(path)
    path = write(tmp_path, "mood", GOOD.replace("words: [好]", "words: []"))
    with pytest.raises(TaskDefinitionError, match=r"key 'labels\.0\.words'"):
        load_task_file(path)


def test_classify_task_needs_two_labels_and_known_example_labels(tmp_path: Path) -> None:
    one_label = GOOD.split("  - {id: down")[0]
    with pytest.raises(TaskDefinitionError, match="at least two labels"):
        load_task_file(write(tmp_path, "mood", one_label))
    with pytest.raises(TaskDefinitionError, match="unknown labels"):
        load_task_file(write(tmp_path, "mood", GOOD + "examples:\n  - {input: x, output: sideways}\n"))


def test_reply_start_is_for_generate_tasks_and_names_a_language(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match="reply_start only apply to generate tasks"):
        load_task_file(write(tmp_path, "mood", GOOD + "reply_start: {down: {en: Sorry}}\n"))
    chat = GOOD.replace("kind: classify", "kind: generate").split("labels:")[0]
    with pytest.raises(TaskDefinitionError, match=r"key 'reply_start\.down\.fr.*'zh' or 'en'"):
        load_task_file(write(tmp_path, "mood", chat + "reply_start: {down: {fr: Désolé}}\n"))
    task = load_task_file(write(tmp_path, "mood", chat + "reply_start: {down: {zh: 抱歉, en: Sorry}}\n"))
    assert task.reply_start == {"down": {"zh": "抱歉", "en": "Sorry"}}


def test_input_template_must_hold_the_text(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match=r"key 'input_template'.*\{text\}"):
        load_task_file(write(tmp_path, "mood", GOOD + "input_template: 'no slot'\n"))


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match=r"line \d+"):
        load_task_file(write(tmp_path, "mood", GOOD + "labels: [unclosed\n"))


def test_name_must_match_file(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match="must match the file name"):
        load_task_file(write(tmp_path, "other", GOOD))


def test_user_dir_adds_and_overrides_builtin_tasks(tmp_path: Path) -> None:
    write(tmp_path, "mood", GOOD)
    write(tmp_path, "chat", "name: chat\ndescription: mine\nkind: generate\nsystem: be brief\n")
    tasks = load_tasks(tmp_path)
    assert tasks["mood"].labels and tasks["mood"].labels[1].words == ["坏", "差"]
    assert tasks["chat"].description == "mine" and tasks["chat"].source == tmp_path / "chat.yaml"
    assert "sentiment" in tasks


def test_missing_tasks_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match="not found"):
        load_tasks(tmp_path / "nope")


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opening it to read would wait for a writer forever


def _zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # reading it would never end


def _huge(path: Path) -> None:
    path.write_text(GOOD.replace("mood", path.stem) + "#" * MAX_FILE_BYTES, encoding="utf-8")


@pytest.mark.parametrize("make", [_fifo, _zero, _huge, Path.mkdir], ids=["fifo", "dev-zero", "huge", "dir"])
def test_a_task_dir_entry_that_is_not_a_small_regular_file_is_refused_at_once(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    make(tmp_path / "bad.yaml")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_tasks(tmp_path)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    loader = threading.Thread(target=load, daemon=True)  # a hang fails the test instead of stopping the run
    loader.start()
    loader.join(10)
    assert outcome, "loading the tasks dir hung"
    assert isinstance(outcome[0], TaskDefinitionError) and f"{tmp_path / 'bad.yaml'}: cannot read" in str(outcome[0])


def test_truncation_keeps_head_and_tail() -> None:
    t = load_tasks()["sentiment"].truncation.model_copy(update={"max_chars": 20, "start_share": 0.5})
    text = "开头" * 10 + "中间" * 50 + "结尾" * 5
    cut, was_cut = t.apply(text)
    assert was_cut and cut.startswith("开头" * 5) and cut.endswith("结尾" * 5) and "中间" not in cut
    assert t.apply("短文本") == ("短文本", False)


def test_a_task_file_with_the_old_head_ratio_key_still_loads_as_start_share() -> None:
    from allinone.tasks.model import Truncation

    assert Truncation.model_validate({"head_ratio": 0.3}).start_share == 0.3
    assert Truncation.model_validate({"start_share": 0.7}).start_share == 0.7
