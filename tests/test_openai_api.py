"""The OpenAI API as clients use it, on the fake engine: response_format, logprobs, n, /v1/completions, and a 400
for every field the server would not honor."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allinone.engines.base import Slots
from tests.fakes import FakeEngine
from tests.test_server import chat_body, events, make_client, negative

CITY = {
    "type": "object",
    "title": "City",
    "properties": {
        "name": {"type": "string", "title": "Name"},
        "population": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "country": {"$ref": "#/$defs/Country"},
    },
    "required": ["name", "population", "country"],
    "additionalProperties": False,
    "$defs": {"Country": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}},
}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(negative)


@pytest.fixture
def client(tmp_path: Path, engine: FakeEngine) -> Iterator[TestClient]:
    with make_client(tmp_path, engine) as c:
        yield c


class WideFake(FakeEngine):
    slots = Slots(generate=4, score=4)


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[tuple[TestClient, FakeEngine]]:
    engine = WideFake(negative)
    with make_client(tmp_path, engine) as c:
        yield c, engine


@pytest.mark.parametrize(
    ("field", "value"),
    [("tools", [{"type": "function", "function": {"name": "f"}}]), ("audio", {"voice": "x"}),
     ("frequency_penalty", 0.5), ("logit_bias", {"1": 5}), ("tool_choice", "required"),
     ("reasoning_effort", "high"), ("bogus", 1)],
)  # fmt: skip
def test_a_field_the_server_would_not_honor_is_a_400_naming_it(client: TestClient, field: str, value: Any) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", **{field: value}))
    assert r.status_code == 400 and r.json()["error"]["type"] == "unsupported"
    assert field in r.json()["error"]["message"]


def test_fields_that_change_nothing_are_accepted(client: TestClient) -> None:
    extra = {"user": "u1", "tools": [], "frequency_penalty": 0, "presence_penalty": 0, "store": False}
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", **extra, metadata={"a": "b"}))
    assert r.status_code == 200


def test_json_schema_response_format_constrains_the_reply_and_returns_parsed_data(
    client: TestClient, engine: FakeEngine
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": CITY, "strict": True}}
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", response_format=fmt))
    assert r.status_code == 200
    assert engine.params[-1].schema == CITY  # the engine generated under the schema
    content = json.loads(r.json()["choices"][0]["message"]["content"])
    assert content == r.json()["data"] == {"name": "x", "population": 0, "country": {"code": "x"}}


def test_json_object_response_format_asks_for_any_object(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", response_format={"type": "json_object"}))
    assert r.status_code == 200 and engine.params[-1].schema == {"type": "object"}
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize(
    ("schema", "named"),
    [({"type": "string", "pattern": "^a"}, "pattern"),
     ({"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}, "format"),
     ({"oneOf": [{"type": "string"}]}, "oneOf"), ({"$ref": "http://x/s.json"}, "$ref")],
)  # fmt: skip
def test_a_schema_feature_outside_the_subset_is_a_400_naming_it(client: TestClient, schema: Any, named: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", response_format=fmt))
    assert r.status_code == 400 and named in r.json()["error"]["message"]


def test_response_format_or_n_on_a_classify_model_is_a_400(client: TestClient) -> None:
    fmt = {"type": "json_object"}
    assert (
        client.post("/v1/chat/completions", json=chat_body("allinone-sentiment", response_format=fmt)).status_code
        == 400
    )
    assert client.post("/v1/chat/completions", json=chat_body("allinone-sentiment", n=2)).status_code == 400


def test_logprobs_of_generated_tokens(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue("hi")
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", logprobs=True, top_logprobs=1))
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert engine.params[-1].logprobs == 1
    assert [c["token"] for c in content] == ["h", "i"] and content[0]["logprob"] == -0.5
    assert content[0]["top_logprobs"] == [{"token": "x", "logprob": -2.0, "bytes": [120]}]


def test_logprobs_of_a_classify_model_are_its_label_probabilities(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("allinone-sentiment", "太差了", logprobs=True))
    body = r.json()
    entry = body["choices"][0]["logprobs"]["content"][0]
    assert entry["token"] == body["classification"]["label"] == "negative"
    probs = {t["token"]: math.exp(t["logprob"]) for t in entry["top_logprobs"]}
    assert probs == pytest.approx(body["classification"]["probabilities"])


def test_n_choices_each_with_their_own_seed(wide: tuple[TestClient, FakeEngine]) -> None:
    client, engine = wide
    engine.enqueue("one", "two")
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", n=2, seed=5))
    assert sorted(c["message"]["content"] for c in r.json()["choices"]) == ["one", "two"]
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert sorted(p.seed for p in engine.params[-2:]) == [5, 6]


def test_n_streamed_choices_are_interleaved_by_index(wide: tuple[TestClient, FakeEngine]) -> None:
    client, engine = wide
    engine.enqueue("ab", "cd")
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", n=2, stream=True))
    chunks = [data for _, data in events(r.text) if data != "[DONE]"]
    texts = {i: "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"][0]["index"] == i)
             for i in (0, 1)}  # fmt: skip
    assert sorted(texts.values()) == ["ab", "cd"]
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


def test_n_above_the_engines_reply_slots_is_a_400(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("allinone-chat", n=3))  # the fake runs one at a time
    assert r.status_code == 400 and "n may be at most 1" in r.json()["error"]["message"]


# --- /v1/completions ---------------------------------------------------------------------------------


def test_a_completion_continues_raw_text(client: TestClient, engine: FakeEngine) -> None:
    r = client.post("/v1/completions", json={"model": "allinone", "prompt": "ab", "max_tokens": 5, "stop": "zz"})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "ok" and body["choices"][0]["logprobs"] is None
    assert engine.params[-1].stop == ("zz",) and engine.params[-1].max_tokens == 5


def test_echo_with_max_tokens_0_returns_the_prompts_token_logprobs(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "allinone-chat", "prompt": "abc", "max_tokens": 0, "echo": True})
    choice = r.json()["choices"][0]
    assert choice["text"] == "abc"
    assert choice["logprobs"]["tokens"] == ["a", "b", "c"]
    assert choice["logprobs"]["token_logprobs"] == [None, -1.0, -1.0]
    assert choice["logprobs"]["text_offset"] == [0, 1, 2]


def test_several_prompts_and_a_stream(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "allinone", "prompt": ["a", "b"], "logprobs": 0})
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert r.json()["choices"][1]["logprobs"]["tokens"] == ["o", "k"]
    r = client.post("/v1/completions", json={"model": "allinone", "prompt": "a", "stream": True})
    datas = [d for _, d in events(r.text)]
    assert datas[-1] == "[DONE]" and "".join(d["choices"][0]["text"] for d in datas[:-1]) == "ok"


def test_completions_refuse_an_unknown_model_an_empty_prompt_and_unhonored_fields(client: TestClient) -> None:
    assert client.post("/v1/completions", json={"model": "gpt-9", "prompt": "a"}).status_code == 404
    assert client.post("/v1/completions", json={"model": "allinone", "prompt": " "}).status_code == 400
    r = client.post("/v1/completions", json={"model": "allinone", "prompt": "a", "suffix": "b"})
    assert r.status_code == 400 and "suffix" in r.json()["error"]["message"]
