"""`allinone serve`: loads the model, runs uvicorn on the configured address, warns off loopback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from allinone import cli as cli_module
from allinone import service as service_module
from tests.fakes import FakeEngine


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = {}
    monkeypatch.setenv("ALLINONE_HOME", str(tmp_path))
    monkeypatch.setattr(
        service_module, "load_engine", lambda settings, probe_layer=None: FakeEngine(lambda p, w: math.log(0.5))
    )

    def run(app: Any, **kwargs: Any) -> None:
        calls.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


def test_serve_runs_the_app_on_loopback_port_8000_by_default(served: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli_module.cli, ["serve"])
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8000)
    assert served["app"].state.services.service.loaded  # loaded before serving
    assert "warning" not in result.output


def test_serve_takes_host_and_port_and_warns_off_loopback(served: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli_module.cli, ["serve", "--host", "0.0.0.0", "--port", "9123"])
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("0.0.0.0", 9123)
    assert "warning: listening on 0.0.0.0" in result.output


def test_serve_off_loopback_with_api_keys_does_not_warn(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLINONE_API_KEYS", "k1,k2")
    result = CliRunner().invoke(cli_module.cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert served["app"].state.services.settings.api_keys == ["k1", "k2"]


def test_serve_with_a_missing_model_file_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALLINONE_HOME", str(tmp_path))
    result = CliRunner().invoke(cli_module.cli, ["serve", "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    assert result.output.startswith("loading the model") and "error:" in result.output
    assert "Traceback" not in result.output


def test_serve_drains_for_the_shutdown_timeout_and_restores_the_sigterm_handler(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    monkeypatch.setenv("ALLINONE_SHUTDOWN_TIMEOUT", "7")
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli_module.cli, ["serve"])
    assert result.exit_code == 0, result.output
    assert served["timeout_graceful_shutdown"] == 7
    assert signal.getsignal(signal.SIGTERM) is before
