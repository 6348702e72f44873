"""The openai engine against small fake servers: what it learns from the server (context size, slots) and what
it tells clients when the server fails (not its URL or body)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from allinone.engines import Conversation, GenParams, Message, dry
from allinone.engines.openai import DEFAULT_CONCURRENCY, OpenAIEngine
from allinone.errors import EngineError


@contextmanager
def fake_server(routes: dict[str, tuple[int, Any]], unanswered: int = 0) -> Iterator[str]:
    """GET/POST path -> (status, JSON body, or a str sent as an event stream) on 127.0.0.1; yields the /v1 base URL.
    The first `unanswered` POSTs get their connection closed without an answer."""
    dropped = 0

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body = routes.get(self.path, (404, {"error": "not found"}))
            sse = isinstance(body, str)
            raw = (body if sse else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            nonlocal dropped
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if dropped < unanswered:
                dropped += 1
                self.close_connection = True
                return
            self._answer()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_llama_cpp_servers_context_and_slots_come_from_models_and_props() -> None:
    models = {"data": [{"id": "m", "meta": {"n_ctx": 2048}}]}
    props = {"total_slots": 6, "default_generation_settings": {"n_ctx": 2048}}
    with fake_server({"/v1/models": (200, models), "/props": (200, props)}) as url:
        engine = OpenAIEngine(url)
    assert engine.info.n_ctx == 2048 and engine.slots.generate == 6 and engine.slots.score == 6


def test_dry_goes_to_llama_cpps_server_and_not_to_servers_without_it() -> None:
    models = {"data": [{"id": "m"}]}
    params = GenParams(max_tokens=4, dry_multiplier=0.8)
    with fake_server({"/v1/models": (200, models), "/props": (200, {"default_generation_settings": {}})}) as url:
        body = OpenAIEngine(url)._sampling(params)
    # the local engine's DRY: its look-back, not the server's default (the whole context)
    assert body["dry_multiplier"] == 0.8 and body["dry_penalty_last_n"] == dry.LAST_N
    assert body["dry_base"] == dry.BASE and body["dry_allowed_length"] == dry.ALLOWED_LENGTH
    assert body["dry_sequence_breakers"] == list(dry.BREAKERS)
    with fake_server({"/v1/models": (200, models)}) as url:
        assert "dry_multiplier" not in OpenAIEngine(url)._sampling(params)


def test_vllms_max_model_len_is_the_context_and_a_configured_concurrency_wins() -> None:
    models = {"data": [{"id": "other"}, {"id": "qwen", "max_model_len": 32768}]}
    with fake_server({"/v1/models": (200, models)}) as url:
        engine = OpenAIEngine(url, model="qwen", concurrency=12)
    assert engine.info.n_ctx == 32768 and engine.slots.generate == 12


def test_a_server_that_says_nothing_gets_the_configured_context_and_default_concurrency() -> None:
    with fake_server({"/v1/models": (200, {"data": [{"id": "m"}]})}) as url:
        engine = OpenAIEngine(url, n_ctx=3000)
    assert engine.info.n_ctx == 3000 and engine.slots.generate == DEFAULT_CONCURRENCY


def test_an_upstream_failure_reaches_the_client_without_the_servers_url_or_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "internal stack trace at /srv/model-7"
    routes = {"/v1/models": (200, {"data": [{"id": "m"}]}), "/v1/chat/completions": (500, {"error": secret})}
    with fake_server(routes) as url:
        engine = OpenAIEngine(url)
        conv = Conversation.of([Message("user", "hi")])
        with pytest.raises(EngineError) as raised:
            engine.score(conv, ["a", "b"])
        with pytest.raises(EngineError) as streamed:
            list(engine.stream(conv, GenParams(max_tokens=4)))
    for error in (raised.value, streamed.value):
        assert secret not in str(error) and "127.0.0.1" not in str(error) and "500" in str(error)
    assert secret in caplog.text  # the operator's log has it


STORY_EVENTS = (
    "".join(
        f"data: {json.dumps(event)}\n\n"
        for event in [
            {"choices": [{"delta": {"content": "hello"}}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        ]
    )
    + "data: [DONE]\n\n"
)
STORY_ROUTES = {"/v1/models": (200, {"data": [{"id": "m"}]}), "/v1/chat/completions": (200, STORY_EVENTS)}


@pytest.mark.parametrize("unanswered", [1, 2])
def test_a_request_the_server_closed_unanswered_is_sent_again(unanswered: int) -> None:
    """A server may close a pooled connection as a request goes out on it (an idle connection's keep-alive expiry):
    the request, never answered, goes out again."""
    conv = Conversation.of([Message("user", "hi")])
    with fake_server(STORY_ROUTES, unanswered) as url:
        chunks = list(OpenAIEngine(url).stream(conv, GenParams(max_tokens=4)))
    assert "".join(c.text for c in chunks) == "hello" and chunks[-1].finish_reason == "stop"


def test_a_server_that_keeps_closing_unanswered_is_an_engine_error() -> None:
    with fake_server(STORY_ROUTES, unanswered=3) as url:
        engine = OpenAIEngine(url)
        with pytest.raises(EngineError, match="the model server failed"):
            list(engine.stream(Conversation.of([Message("user", "hi")]), GenParams(max_tokens=4)))
