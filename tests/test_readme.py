"""The README documents every setting, its two commands are the ones CI runs and its figures are measured ones."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from allinone.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    """benchmarks/report.py, a plain script rather than a package."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("report")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name for name in Settings.model_fields if f"`ALLINONE_{name.upper()}`" not in README]
    assert not missing, f"settings missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "`make test`" in README and "`make run`" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_table_and_phrase_of_measured_figures_is_what_its_results_file_says(report: ModuleType) -> None:
    blocks = list(report.BLOCK.finditer(README))
    assert {m.group("name") for m in blocks} <= set(report.TABLES), "a table block with no formatter"
    assert report.rewrite(README) == README, "README figures differ from benchmarks/results: run benchmarks/report.py"


def test_every_figure_in_the_prose_comes_from_a_results_file_or_says_why_not(report: ModuleType) -> None:
    assert report.unchecked(README) == [], "put each figure in a phrase of report.PHRASES, or in NOT_MEASURED"


def test_every_figure_said_not_to_be_measured_is_still_in_the_readme(report: ModuleType) -> None:
    stale = [text for text in report.NOT_MEASURED if not re.search(report.loose(text), README)]
    assert not stale, f"NOT_MEASURED entries no longer in the README: {stale}"


def _changed(figure: str) -> str:
    """The figure with its last digit changed, as a hand edit would."""
    i = max(i for i, c in enumerate(figure) if c.isdigit())
    return figure[:i] + str((int(figure[i]) + 1) % 10) + figure[i + 1 :]


def _table_figure(report: ModuleType, name: str) -> re.Match[str]:
    """The first figure of the first row of a table block."""
    block = next(m for m in report.BLOCK.finditer(README) if m.group("name") == name)
    row = block.start("body") + block.group("body").index("\n", block.group("body").index("\n") + 1) + 1
    found = re.compile(r"\d+(?:\.\d+)?").search(README, row)
    assert found is not None
    return found


def _prose_figure(report: ModuleType, words: str) -> tuple[str, re.Match[str]]:
    """The phrase holding `words` and where it is in the README (its first figure is group 1)."""
    found = next(p for p in report.phrases() if words in p.template)
    m = found.pattern.search(README)
    assert m is not None
    return found.template, m


@pytest.mark.parametrize("table", ["load", "core"])
def test_a_table_figure_edited_by_hand_is_caught_and_rewritten(report: ModuleType, table: str) -> None:
    m = _table_figure(report, table)
    edited = README[: m.start()] + _changed(m.group()) + README[m.end() :]
    assert edited != README and report.rewrite(edited) == README


@pytest.mark.parametrize("words", ["Server RSS grew", "tokens/s (best"])
def test_a_prose_figure_edited_by_hand_is_caught_and_rewritten(report: ModuleType, words: str) -> None:
    _, m = _prose_figure(report, words)
    edited = README[: m.start(1)] + _changed(m.group(1)) + README[m.end(1) :]
    assert edited != README and report.rewrite(edited) == README


def test_a_figure_written_by_hand_is_caught(report: ModuleType) -> None:
    edited = README.replace("\n## Development", "\nA reply now starts after 0.8 s, 0.93 of the time.\n\n## Development")
    assert [line.split(": ", 1)[1] for line in report.unchecked(edited)] == ["0.8 s", "0.93"]


def test_a_phrase_reworded_by_hand_is_caught(report: ModuleType) -> None:
    _, m = _prose_figure(report, "Server RSS grew")
    edited = README[: m.start()] + README[m.start() :].replace("Server RSS grew", "The server's RSS grew", 1)
    with pytest.raises(ValueError, match="Server RSS grew"):
        report.rewrite(edited)
    unchecked = [line.split(": ", 1)[1] for line in report.unchecked(edited)]
    assert len(unchecked) == 1 and unchecked[0].startswith(m.group(1))  # the phrase's figure, now unaccounted for


EARLIER = sorted((ROOT / "benchmarks" / "results" / "earlier").glob("*/*.json"))


@pytest.mark.parametrize("copy", EARLIER, ids=[f"{p.parent.name}/{p.name}" for p in EARLIER])
def test_an_earlier_results_file_is_the_one_its_commit_wrote(copy: Path) -> None:
    commit, name = copy.parent.name, copy.name
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "cat-file", "-e", commit], capture_output=True).returncode:
        pytest.skip(f"no commit {commit} in this clone's history")
    wrote = subprocess.run([*git, "rev-parse", f"{commit}:benchmarks/results/{name}"], capture_output=True, text=True)
    copied = subprocess.run([*git, "hash-object", str(copy)], capture_output=True, text=True)
    assert copied.stdout == wrote.stdout


def test_the_chat_transcript_is_the_output_the_script_wrote() -> None:
    written = (ROOT / "benchmarks" / "results" / "readme_transcript.md").read_text(encoding="utf-8")
    start, end = "<!-- transcript: benchmarks/readme_transcript.py -->", "<!-- /transcript -->"
    assert f"{start}\n{written}{end}" in README
    assert "Real output of qwen-allinone" in written
