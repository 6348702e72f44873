"""Task options, output_schema and routing settings in task YAML: loading, strictness, filling prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from allinone.errors import InvalidInput, TaskDefinitionError
from allinone.tasks import check_task_file, cjk_share, load_task_file, load_tasks

TASKS = load_tasks()

GEN = """\
name: brief
description: test task
kind: generate
system: "Be {tone}."
input_template: "{text}"
options:
  tone:
    description: how to sound
    default: warm
    choices:
      warm: {fill: kind}
      cold: {fill: distant, max_chars: 40}
    number: {min: 5, max: 100, fill: "at most {value} characters", max_chars: true}
"""


def write(tmp_path: Path, text: str, name: str = "brief") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_new_builtin_tasks_load_with_their_kinds_options_and_schema() -> None:
    assert {n: TASKS[n].kind for n in ("summary", "intent", "keywords", "translate")} == {
        "summary": "generate",
        "intent": "classify",
        "keywords": "generate",
        "translate": "generate",
    }
    assert [lb.display for lb in TASKS["intent"].labels or []] == ["咨询", "投诉", "下单", "售后", "闲聊"]
    assert set(TASKS["summary"].options) == {"length", "language"}
    assert TASKS["translate"].options["target"].default == "auto"
    assert TASKS["keywords"].output_schema and TASKS["keywords"].grammar and "root ::=" in TASKS["keywords"].grammar


def test_options_fill_placeholders_and_set_the_length_limit() -> None:
    summary, chosen = TASKS["summary"].with_options({"length": "short"}, "今天天气很好")
    assert chosen == {"length": "short", "language": "zh"}
    assert "{length}" not in summary.input_template and "ONE short sentence" in summary.input_template
    assert "用中文" in summary.input_template and summary.generation and summary.generation.max_chars == 150
    numbered, _ = TASKS["summary"].with_options({"length": 80}, "Some English text")
    assert (
        numbered.generation
        and numbered.generation.max_chars == 80
        and "at most 80 characters" in numbered.user_message("x").content
    )


def test_auto_option_follows_the_script_of_the_text() -> None:
    translate = TASKS["translate"]
    assert translate.with_options({}, "今天天气很好。")[1] == {"target": "en"}
    assert translate.with_options({}, "The weather is nice today.")[1] == {"target": "zh"}
    assert translate.with_options({"target": "en"}, "Already English")[1] == {"target": "en"}
    assert cjk_share("abc 中文") == pytest.approx(0.4) and cjk_share("123 !!") == 0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"length": "huge"}, "option 'length'.*'huge' is not allowed"),
        ({"length": "5"}, "not allowed"),
        ({"tone": "x"}, "no option"),
        ({"length": "²"}, "'²' is not allowed"),  # isdigit() is true, int() fails
        ({"length": "١٢٠"}, "not allowed"),  # Arabic-Indic digits
        ({"length": "9" * 5000}, "'9{40}…' is not allowed"),  # past int()'s digit limit; repeated clipped
        ({"length": 10**30}, "not allowed"),
        ({"length": "80\u0000"}, "not allowed"),
    ],
)
def test_bad_option_values_are_invalid_input_naming_the_option(values: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        TASKS["summary"].with_options(values, "text")


def test_user_task_with_options_loads_and_fills(tmp_path: Path) -> None:
    task = load_task_file(write(tmp_path, GEN))
    cold, _ = task.with_options({"tone": "cold"}, "x")
    assert cold.system == "Be distant." and cold.generation and cold.generation.max_chars == 40
    assert task.with_options({}, "x")[0].system == "Be kind."


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (("Be {tone}.", "Be {tnoe}."), "system", r"\['tnoe'\] are not declared"),
        (("default: warm", "default: hot"), "options.tone", "default 'hot' is not an allowed value"),
        (("  tone:", "  max_tokens:"), "options", "option names"),
        (("name: brief", "name: auto"), "name", "reserved"),
        (("kind: generate", "kind: generate\noutput_schema: {type: string}"), "output_schema", "maxLength is required"),
        (
            ("kind: generate", "kind: generate\nmulti_turn: true\noutput_schema: {type: string, maxLength: 5}"),
            "output_schema",
            "single-turn",
        ),
        (("kind: generate", "kind: generate\nrouting: {enabled: maybe}"), "routing.enabled", "boolean"),
    ],
)
def test_definition_errors_name_the_file_and_key(
    tmp_path: Path, change: tuple[str, str], key: str, message: str
) -> None:
    path = write(tmp_path, GEN.replace(*change))
    with pytest.raises(TaskDefinitionError, match=rf"{path}: key '{key}': .*{message}"):
        load_task_file(path)


def test_check_task_file_lists_every_problem_separately(tmp_path: Path) -> None:
    path = write(tmp_path, GEN.replace("kind: generate", "kind: generate\npromt: x\nmulti_turn: maybe"))
    problems = check_task_file(path)
    assert len(problems) == 2 and all(p.startswith(f"{path}: key '") for p in problems)
    assert check_task_file(write(tmp_path, GEN)) == []
