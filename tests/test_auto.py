"""Automatic routing on the fake engine: the routing prompt, the probabilities, and what `auto` runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from allinone.auto import pick, picker_task
from allinone.errors import InvalidInput, TaskDefinitionError
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import load_tasks
from tests.fakes import FakeEngine

TASKS = load_tasks()


def prefers(task: str, p: float = 0.8):  # type: ignore[no-untyped-def]
    """A scorer that gives `task` probability p on real inputs and is uniform on content-free ones."""

    def scorer(prompt: str, word: str) -> float:
        if prompt.rsplit("<user>", 1)[-1].removesuffix("<assistant>") in ("N/A", "...", "?"):
            return 0.0  # no bias to divide out
        return math.log(p) if word == task else math.log((1 - p) / 5)

    return scorer


def test_routing_prompt_lists_every_routable_task_with_its_description() -> None:
    task = picker_task(TASKS.values())
    assert [lb.id for lb in task.labels or []][-1] == "chat"  # the conversation task comes last
    assert {lb.id for lb in task.labels or []} == set(TASKS)
    for t in TASKS.values():
        assert f"- {t.name}: {' '.join(t.description.split())}" in task.system
    assert all(lb.words == [lb.id] for lb in task.labels or [])


def test_routing_examples_are_taken_in_turn_from_every_task() -> None:
    examples = picker_task(TASKS.values()).examples
    first_round = [ex.output for ex in examples[: len(TASKS)]]
    assert sorted(first_round) == sorted(TASKS)
    assert sum(len(t.routing.examples) for t in TASKS.values()) == len(examples)


def test_tasks_marked_not_routable_are_never_candidates() -> None:
    tasks = dict(TASKS)
    tasks["chat"] = tasks["chat"].model_copy(
        update={"routing": tasks["chat"].routing.model_copy(update={"enabled": False})}
    )
    assert "chat" not in {lb.id for lb in picker_task(tasks.values()).labels or []}
    with pytest.raises(InvalidInput, match="at least two"):
        picker_task([TASKS["chat"]])


def test_route_returns_the_argmax_task_with_a_probability_over_all_candidates() -> None:
    chosen = pick(FakeEngine(prefers("summary")), picker_task(TASKS.values()), "帮我总结一下这篇文章")
    assert chosen.task == "summary" and chosen.probability == max(chosen.probabilities.values())
    assert sum(chosen.probabilities.values()) == pytest.approx(1.0) and set(chosen.probabilities) == set(TASKS)


def test_router_routes_with_the_same_engine_and_auto_is_not_a_task(tmp_path: Path) -> None:
    engine = FakeEngine(prefers("translate"))
    service = TaskService(Settings(home=tmp_path), engine)
    assert service.pick_task("翻译：你好").task == "translate"
    assert "task router" in engine.prompts[-1].text
    with pytest.raises(Exception, match="unknown task 'auto'"):
        service.task("auto")


def test_a_user_task_named_auto_is_refused(tmp_path: Path) -> None:
    (tmp_path / "auto.yaml").write_text("name: auto\ndescription: x\nkind: generate\nsystem: s\n", encoding="utf-8")
    with pytest.raises(TaskDefinitionError, match=r"key 'name'.*reserved"):
        load_tasks(tmp_path)
