from __future__ import annotations

import math

import pytest

from allinone.classify import classify, display_line, label_probabilities
from allinone.errors import InvalidInput
from allinone.tasks import load_tasks
from tests.fakes import FakeEngine

SENTIMENT = load_tasks()["sentiment"]


def scorer(prompt: str, word: str) -> float:
    return {"正面": math.log(0.6), "负面": math.log(0.2)}.get(word, -20.0)


def test_probabilities_are_a_softmax_over_labels_and_the_label_is_the_argmax() -> None:
    result = classify(FakeEngine(scorer), SENTIMENT, "还不错")
    assert result.label == "positive"
    assert result.probabilities["positive"] == pytest.approx(0.75)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.display == "😄 LLM 情感判断: 正面"


def test_display_line_for_negative() -> None:
    assert display_line(SENTIMENT, "negative") == "😡 LLM 情感判断: 负面"


def test_several_words_per_label_are_pooled() -> None:
    task = SENTIMENT.model_copy(
        update={
            "labels": [
                SENTIMENT.labels[0],
                SENTIMENT.labels[1].model_copy(update={"words": ["负面", "差评"]}),
            ]
        }  # type: ignore[index]
    )
    probs = label_probabilities(task, [math.log(0.4), math.log(0.3), math.log(0.3)])
    assert probs["negative"] == pytest.approx(0.6)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(text: str) -> None:
    from allinone.service import TaskService
    from allinone.settings import Settings

    with pytest.raises(InvalidInput, match="请输入文本"):
        TaskService(Settings(), FakeEngine(scorer)).classify("sentiment", text)


def test_prefix_holds_system_and_examples_and_suffix_holds_the_input() -> None:
    data = {**SENTIMENT.model_dump(), "examples": [{"input": "好极了", "output": "positive"}]}
    task = type(SENTIMENT).model_validate(data)
    engine = FakeEngine(scorer)
    classify(engine, task, "用户的文本")
    prompt = engine.prompts[-1]
    prefix = "".join(s.text for s in prompt.prefix)
    assert task.system in prefix and "好极了" in prefix and "正面" in prefix
    assert "用户的文本" not in prefix
    user = [s for s in prompt.suffix if not s.trusted]
    assert [s.text for s in user] == ["用户的文本"]


def test_over_long_input_is_cut_and_flagged() -> None:
    result = classify(FakeEngine(scorer), SENTIMENT, "好" * 5000)
    assert result.truncated


def test_generate_task_cannot_be_classified() -> None:
    with pytest.raises(InvalidInput, match="not a classify task"):
        classify(FakeEngine(scorer), load_tasks()["chat"], "hi")
