"""Which engine a setting, a CLI flag or a model reference selects, and how scoring reaches the responses."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from allinone import cli as cli_module
from allinone.engines import Prompt, Scores
from allinone.errors import ModelError
from allinone.models import engine_for, transformers_source
from allinone.server import create_app
from allinone.service import TaskService
from allinone.settings import Settings
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("ref", "engine"),
    [
        ("default", "llamacpp"),
        ("/models/x.gguf", "llamacpp"),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf", "llamacpp"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "transformers"),
        ("hf:Qwen/Qwen1.5-0.5B-Chat", "transformers"),
        ("/models/qwen-dir", "transformers"),
        ("openai:", "openai"),
        ("openai:Qwen/Qwen2.5-7B-Instruct", "openai"),
    ],
)
def test_auto_engine_follows_the_model_reference(ref: str, engine: str) -> None:
    assert engine_for(ref) == engine


def test_transformers_source_of_a_dir_a_hub_id_and_a_bad_reference(tmp_path: Path) -> None:
    assert transformers_source(str(tmp_path), Settings(home=tmp_path)).source == str(tmp_path)
    hub = transformers_source("hf:Qwen/Qwen2.5-0.5B-Instruct", Settings(home=tmp_path))
    assert hub.source == "Qwen/Qwen2.5-0.5B-Instruct" and hub.gguf_file is None
    with pytest.raises(ModelError, match="not a model dir"):
        transformers_source("no-such-thing", Settings(home=tmp_path))


def test_engine_flag_reaches_the_settings_of_every_model_command(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ALLINONE_OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    result = CliRunner().invoke(cli_module.cli, ["run", "sentiment", "太差了", "--engine", "openai"])
    assert result.exit_code == 2
    assert f"error: the OpenAI-compatible server at http://127.0.0.1:{port}/v1 is unreachable" in result.output


class ChoiceEngine(FakeEngine):
    """A fake engine that, like a server without logprobs, can only say which label it chose."""

    def score(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Scores:
        scores = super().score(prompt, continuations, hidden)
        return Scores([0.0 if c == "负面" else -1e9 for c in continuations], scores.usage, None, "choice")


def test_responses_say_when_labels_come_from_a_choice_not_logprobs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, log_file=tmp_path / "log")
    with TestClient(create_app(settings, TaskService(settings, ChoiceEngine())), base_url="http://127.0.0.1") as client:
        task = client.post("/v1/tasks/sentiment", json={"text": "太差了"}).json()
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "allinone-sentiment", "messages": [{"role": "user", "content": "太差了"}]},
        ).json()
    assert task["scoring"] == "choice" and task["label"] == "negative"
    assert chat["classification"]["scoring"] == "choice"


def test_scaling_docs_explain_every_engine_setting() -> None:
    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    names = ["engine", "dtype", "device", "openai_base_url", "openai_api_key", "openai_model"]
    missing = [n for n in names if f"ALLINONE_{n.upper()}" not in doc]
    assert not missing, f"engine settings missing from docs/scaling.md: {missing}"
    assert all(f"--engine {e}" in doc for e in ("llamacpp", "transformers", "openai"))


@pytest.mark.parametrize(
    ("mode", "amx", "repack"),
    [("on", False, True), ("on", True, True), ("off", False, False), ("auto", False, True), ("auto", True, False)],
)
def test_repack_setting_repacks_unless_off_or_auto_on_an_amx_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str, amx: bool, repack: bool
) -> None:
    from allinone.engines import llamacpp

    monkeypatch.setattr(llamacpp, "cpu_has_amx", lambda: amx)
    with caplog.at_level("WARNING", logger="allinone.engines.llamacpp"):
        assert llamacpp.repack_weights(mode) is repack
    assert ("crashed there" in caplog.text) == (mode == "on" and amx)  # told, not refused: it may work elsewhere
    assert Settings(repack=mode).repack == mode  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settings(repack="yes")  # type: ignore[arg-type]
