"""The README documents every setting and its two commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from allinone.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name for name in Settings.model_fields if f"`ALLINONE_{name.upper()}`" not in README]
    assert not missing, f"settings missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "`make test`" in README and "`make run`" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_table_of_measured_figures_is_what_its_results_file_says() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    blocks = list(report.BLOCK.finditer(README))
    assert {m.group("name") for m in blocks} <= set(report.TABLES), "a table block with no formatter"
    assert report.rewrite(README) == README, "README figures differ from benchmarks/results: run benchmarks/report.py"
