"""Property-based tests: any task file either loads or fails with the project's task error; any JSON body either
validates against a request schema or fails with a validation error; no generated API request gets a 5xx."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydantic
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allinone.errors import TaskDefinitionError
from allinone.server import create_app
from allinone.server.schemas import (
    AnalyzeAndReplyRequest,
    AnalyzeRequest,
    ChatCompletionRequest,
    ChatRequest,
    TaskRequest,
)
from allinone.service import TaskService
from allinone.settings import Settings
from allinone.tasks import builtin_dir, load_task_file
from tests.fakes import FakeEngine

# `make check`, the fast lane, sets ALLINONE_FAST_LANE=1 and draws half of each test's examples;
# `make test` (and CI) draws them all
FAST_LANE = os.environ.get("ALLINONE_FAST_LANE") == "1"


def examples(n: int) -> int:
    return n // 2 if FAST_LANE else n


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


@settings(max_examples=examples(150), deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_task_file_loads_or_fails_with_a_task_error(content: str) -> None:
    _load(content)


@settings(max_examples=examples(150), deadline=None)
@given(st.dictionaries(st.sampled_from(TASK_KEYS) | st.text(max_size=10), json_values, max_size=8))
def test_any_mapping_of_task_keys_loads_or_fails_with_a_task_error(data: dict[str, Any]) -> None:
    _load(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=examples(200), deadline=None)
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
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


class JsonReplies(FakeEngine):
    """Replies that every generate task accepts, so that a 502 (a reply that does not parse) is never expected:
    the fake honors a schema (a task's output_schema, a request's response_format) like the real engine."""

    def stream(self, prompt: Any, params: Any) -> Any:
        self.replies = []
        return super().stream(prompt, params)


LOCAL = "http://127.0.0.1"  # the Host a loopback-bound server answers to
KEY = "schemathesis-key"


def _app(**overrides: Any) -> Any:
    home = Path(tempfile.mkdtemp(prefix="allinone-schemathesis-"))
    app_settings = Settings(home=home, log_file=home / "requests.log", **overrides)
    return create_app(app_settings, TaskService(app_settings, JsonReplies()))  # the model is loaded: no lifespan needed


APPS = [  # the same requests to both: sessions in memory without keys; on disk, owned by a key
    (_app(session_store="memory"), {}),
    (_app(api_keys=KEY, max_sessions_per_key=5, max_session_turns=6), {"Authorization": f"Bearer {KEY}"}),
]
API = schemathesis.openapi.from_asgi("/openapi.json", APPS[0][0], headers={"Host": "127.0.0.1"})


@API.parametrize()
@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_api_request_gets_a_server_error(case: Any) -> None:
    for app, headers in APPS:
        response = case.call(base_url=LOCAL, app=app, headers=headers)
        where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["type"], str) and isinstance(error["message"], str), where


# --- every route and field, with any unicode: never a 5xx, every error body JSON ----------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates included, but rarely drawn
ODD_CHARS = ["\ud800", "\udfff", "\x00", "\u202e", "\u2066", "²", "\ufeff", "\x1b"]  # drawn often
HUGE = "__huge_number__"  # replaced in the encoded body by a 5000-digit number, which json.dumps cannot write
SPECIAL = ["\ud800", "²", "9" * 5000, HUGE, "\udfff\ud800", "\x00", "\u202e\u2066abc", "١٢٠", "1e999", " "]
texts = st.sampled_from(SPECIAL) | st.text(st.sampled_from(ODD_CHARS) | ANY_CHAR, max_size=40)
numbers = st.integers(-(10**30), 10**30) | st.floats() | st.sampled_from([2**63, -(2**63) - 1, HUGE])
leaves = st.none() | st.booleans() | numbers | texts
anything = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8
)
ROLES = ["user", "assistant", "system", "developer"]
TASKS = {t.name: t for t in map(load_task_file, builtin_dir().glob("*.yaml"))}
TASK_NAMES = sorted(TASKS)


def _messages(content: st.SearchStrategy[Any], role: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    parts = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | texts, "text": content}))
    turn = st.fixed_dictionaries({"role": role, "content": content | parts})
    return st.lists(turn, max_size=2).map(lambda turns: [*turns, {"role": "user", "content": "你好"}]) | st.lists(turn)


GOOD_TEXT = st.sampled_from(["你好，今天很开心", "The room was spotless.", "北京明天会下雨吗？"])
LIKELY: dict[str, st.SearchStrategy[Any]] = {  # each field with values a client means
    "text": GOOD_TEXT,
    "messages": _messages(GOOD_TEXT, st.sampled_from(ROLES)),
    "session_id": st.sampled_from(["s-1", "s-2"]),
    "stream": st.booleans(),
    "model": st.sampled_from([f"allinone-{t}" for t in [*TASK_NAMES, "auto"]]),
    "max_tokens": st.integers(1, 64),
    "max_completion_tokens": st.integers(1, 64),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "top_k": st.integers(0, 100),
    "seed": st.integers(0, 2**32 - 1),
    "n": st.just(1),
    "stop": st.sampled_from(["。", ["\n", "!"]]),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "length": st.sampled_from(["short", "medium", "80", 120]),
    "language": st.sampled_from(["zh", "en", "auto"]),
    "target": st.sampled_from(["zh", "en", "auto"]),
}
ODD: dict[str, st.SearchStrategy[Any]] = {  # and with anything at all
    **{k: numbers | anything for k in LIKELY},
    "text": texts | anything,
    "messages": _messages(texts, st.sampled_from(ROLES) | texts) | anything,
    "session_id": texts | anything,
    "model": texts | anything,
    "stop": texts | st.lists(texts, max_size=5),
    **{k: texts | numbers for k in ("length", "language", "target")},
}
OPTIONS = ["max_tokens", "temperature", "top_p", "top_k", "seed", "stop"]
TASK_OPTIONS = ["length", "language", "target"]
COMPLETION = ["stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed"]
ROUTES = {  # name: method, path ({} takes a segment), the fields needed to get anywhere, the other fields read
    "analyze": ("POST", "/analyze", ["text"], []),
    "chat": ("POST", "/chat", ["text"], ["session_id"]),
    "analyze_and_reply": ("POST", "/v1/analyze_and_reply", ["text"], ["session_id", "stream", *OPTIONS]),
    "task text": ("POST", "/v1/tasks/{}", ["text"], ["session_id", "stream", *OPTIONS, *TASK_OPTIONS]),
    "task messages": ("POST", "/v1/tasks/{}", ["messages"], ["stream", *OPTIONS, *TASK_OPTIONS]),
    "chat completions": ("POST", "/v1/chat/completions", ["model", "messages"], [*COMPLETION, "n"]),
    "get session": ("GET", "/v1/sessions/{}", [], []),
    "delete session": ("DELETE", "/v1/sessions/{}", [], []),
    **{path: ("GET", path, [], []) for path in ("/health", "/v1/tasks", "/v1/models", "/metrics")},
}
Call = tuple[str, str, dict[str, Any]]  # method, path, JSON body


ANY_NAME, SEGMENT = "<any name>", "<path segment>"  # pseudo-fields: an unknown field; the path's {} part
TASKS_WITH = {name: [t.name for t in TASKS.values() if name in t.options] for name in TASK_OPTIONS}
ROUTE_FIELDS = [
    (route, field)
    for route, (_, path, core, optional) in ROUTES.items()
    for field in [*core, *optional, ANY_NAME, *([SEGMENT] if "{}" in path else [])]
]


@st.composite
def calls(draw: st.DrawFn, route: str, field: str) -> Call:
    """A request to `route`: the fields it needs as a client means them, some of its other fields too, and
    `field` (one of them, or any name) with anything at all in it."""
    method, path, core, optional = ROUTES[route]
    names = TASKS_WITH.get(field) or ["s-1", *TASK_NAMES, "auto"]  # a task option goes to a task that has it
    segment = draw(texts) if field == SEGMENT else draw(st.sampled_from(names) | texts)
    path = path.replace("{}", quote(segment.encode("utf-8", "surrogatepass"), safe=""))
    fields = [*core, *draw(st.lists(st.sampled_from(optional), unique=True))] if optional else core
    body = {k: draw(LIKELY[k]) for k in fields}
    key = draw(texts) if field == ANY_NAME else field
    body[key] = draw(ODD.get(key, anything))
    return method, path, body


def _encode(body: Any) -> bytes:
    raw = json.dumps(body)  # ASCII: lone surrogates travel as \\ud800 escapes, as a client may send them
    return raw.replace(json.dumps(HUGE), "1" + "0" * 5000).encode()


def _check_events(text: str) -> None:
    for block in text.strip().split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        assert data and (data[0] == "[DONE]" or json.loads(data[0]) is not None), block


@pytest.fixture(scope="module")
def any_input_client() -> Any:
    home = Path(tempfile.mkdtemp(prefix="allinone-any-input-"))
    app_settings = Settings(home=home, log_file=home / "requests.log")  # the sqlite session store
    app = create_app(app_settings, TaskService(app_settings, JsonReplies()))
    with TestClient(app, raise_server_exceptions=False, base_url=LOCAL) as c:
        yield c


@pytest.mark.parametrize(("route", "field"), ROUTE_FIELDS)
@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_request_to_any_route_with_any_unicode_in_any_field_gets_a_5xx(
    any_input_client: TestClient, route: str, field: str, data: st.DataObject
) -> None:
    call = data.draw(calls(route, field))
    _check_call(any_input_client, *call)


USER_X = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "call",
    [  # the reproductions, and more of their kind
        ("POST", "/v1/tasks/summary", {"text": "一段文字", "length": "²"}),
        ("POST", "/v1/tasks/summary", {"text": "一段文字", "length": "\ud800"}),
        ("POST", "/v1/tasks/summary", {"text": "一段文字", "length": HUGE}),
        ("POST", "/v1/tasks/summary", {"text": "一段文字", "length": "9" * 5000}),
        ("POST", "/v1/chat/completions", {"model": "\ud800", "messages": USER_X}),
        ("POST", "/v1/chat/completions", {"model": "a" * 100_000, "messages": USER_X}),
        ("POST", "/v1/tasks/chat", {"text": "\u202e\x00", "\ud800": 1}),
        ("POST", "/v1/tasks/%ED%A0%80", {"text": "x"}),
        ("POST", "/v1/tasks/translate", {"text": "x", "target": "\udfff"}),
        ("POST", "/v1/tasks/chat", {"text": "x", "stop": "\ud800"}),
        ("GET", "/v1/sessions/%ED%A0%80", {}),
    ],
    ids=lambda call: repr(call)[:60],
)
def test_the_inputs_that_gave_500s_get_a_json_error(any_input_client: TestClient, call: Call) -> None:
    _check_call(any_input_client, *call)


def _check_call(client: TestClient, method: str, path: str, body: dict[str, Any]) -> None:
    if method == "POST":
        r = client.post(path, content=_encode(body), headers={"content-type": "application/json"})
    else:
        r = client.request(method, path)
    assert r.status_code < 500, (path, body, r.status_code, r.text[:500])
    text = r.content.decode("utf-8")  # strict: no lone surrogate or broken byte went out
    if r.status_code >= 400:
        error = json.loads(text)["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str)
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        _check_events(text)
