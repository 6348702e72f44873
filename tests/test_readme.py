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


@pytest.mark.parametrize(
    ("measured", "by_hand"),
    [
        ("| all | 131 | 1.83 |", "| all | 131 | 1.84 |"),  # a table block
        ("| peak RSS | 839 MB |", "| peak RSS | 800 MB |"),  # a table block
        ("Server RSS grew 2.7%", "Server RSS grew 1.7%"),  # a figure in the prose
        ("(18.0 and 46.8 tokens/s", "(18.0 and 48.6 tokens/s"),  # a figure in the prose
    ],
)
def test_a_figure_edited_by_hand_is_caught_and_rewritten(report: ModuleType, measured: str, by_hand: str) -> None:
    assert README.count(measured) == 1
    edited = README.replace(measured, by_hand)
    assert report.rewrite(edited) == README


def test_a_figure_written_by_hand_is_caught(report: ModuleType) -> None:
    edited = README.replace("\n## Development", "\nA reply now starts after 0.8 s, 0.93 of the time.\n\n## Development")
    assert [line.split(": ", 1)[1] for line in report.unchecked(edited)] == ["0.8 s", "0.93"]


def test_a_phrase_reworded_by_hand_is_caught(report: ModuleType) -> None:
    edited = README.replace("Server RSS grew 2.7%", "The server's RSS grew 2.7%")
    with pytest.raises(ValueError, match="Server RSS grew"):
        report.rewrite(edited)
    assert [line.split(": ", 1)[1] for line in report.unchecked(edited)] == ["2.7%"]


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
