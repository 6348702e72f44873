"""Property-based tests: any task file either loads or fails with the project's task error; any JSON body either
validates against a request schema or fails with a validation error; no generated API request gets a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pydantic
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allinone.errors import TaskDefinitionError
from allinone.router import Router
from allinone.server import create_app
from allinone.server.schemas import (
    AnalyzeAndReplyRequest,
    AnalyzeRequest,
    ChatCompletionRequest,
    ChatRequest,
    TaskRequest,
)
from allinone.settings import Settings
from allinone.tasks import builtin_dir, load_task_file
from tests.fakes import FakeEngine

scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
TASK_KEYS = [
    "name",
    "description",
    "kind",
    "system",
    "examples",
    "input_template",
    "options",
    "labels",
    "display_template",
    "calibration",
    "head",
    "generation",
    "multi_turn",
    "output_schema",
    "routing",
    "truncation",
]
SENTIMENT = yaml.safe_load((builtin_dir() / "sentiment.yaml").read_text(encoding="utf-8"))
SUMMARY = yaml.safe_load((builtin_dir() / "summary.yaml").read_text(encoding="utf-8"))


def _load(content: str, name: str = "t") -> None:
    """Load `content` as the task file `name`.yaml: a Task or TaskDefinitionError, nothing else."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.yaml"
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            load_task_file(path)
        except TaskDefinitionError as e:
            assert str(e).startswith(str(path)), e  # the message names the file


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_task_file_loads_or_fails_with_a_task_error(content: str) -> None:
    _load(content)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(TASK_KEYS) | st.text(max_size=10), json_values, max_size=8))
def test_any_mapping_of_task_keys_loads_or_fails_with_a_task_error(data: dict[str, Any]) -> None:
    _load(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([SENTIMENT, SUMMARY]),
    st.lists(st.tuples(st.sampled_from(TASK_KEYS), json_values), min_size=1, max_size=3),
)
def test_a_real_task_with_some_keys_replaced_by_anything_loads_or_fails_with_a_task_error(
    base: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    data = {**base, **dict(changes)}
    _load(yaml.safe_dump(data, allow_unicode=True), name=str(base["name"]))


# --- request schemas ----------------------------------------------------------------------------

REQUESTS = [TaskRequest, AnalyzeRequest, ChatRequest, AnalyzeAndReplyRequest, ChatCompletionRequest]
FIELDS = [
    "text",
    "messages",
    "session_id",
    "stream",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "model",
    "role",
    "content",
    "length",
]
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": json_values}),
    max_size=3,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values | messages, max_size=6) | json_values


@pytest.mark.parametrize("schema", REQUESTS, ids=lambda s: s.__name__)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_json_body_validates_or_fails_with_a_validation_error(schema: type[pydantic.BaseModel], body: Any) -> None:
    try:
        request = schema.model_validate(body)
    except pydantic.ValidationError:
        return
    options = getattr(request, "options", None)
    if options is not None:
        assert isinstance(options(), dict)
    assert schema.model_validate_json(request.model_dump_json()) is not None  # a valid request round-trips


# --- the whole API, from its OpenAPI spec -------------------------------------------------------


def _app() -> Any:
    home = Path(tempfile.mkdtemp(prefix="allinone-schemathesis-"))
    app_settings = Settings(home=home, log_file=home / "requests.log", session_store="memory")
    return create_app(app_settings, Router(app_settings, FakeEngine()))  # the model is loaded: no lifespan needed


APP = _app()
API = schemathesis.openapi.from_asgi("/openapi.json", APP)


@API.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_api_request_gets_a_server_error(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
