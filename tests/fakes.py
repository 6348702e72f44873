"""A fake engine for pure-logic tests: it records prompts and replays queued outputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from allinone.engines.base import (
    Chunk,
    Conversation,
    Engine,
    EngineInfo,
    GenParams,
    Prompt,
    Scores,
    Segment,
    TokenLogprob,
    Usage,
)


class FakeEngine(Engine):
    def __init__(self, scorer: Callable[[str, str], float] | None = None) -> None:
        self.info = EngineInfo("fake", "fake-model", 4096)
        self.scorer = scorer or (lambda prompt, word: 0.0)
        self.replies: list[str] = []
        self.prompts: list[Prompt] = []
        self.params: list[GenParams] = []
        self.batches: list[int] = []  # sizes of score_batch calls

    def enqueue(self, *replies: str) -> None:
        self.replies.extend(replies)

    def render(self, conversation: Conversation) -> Prompt:
        n_fixed = conversation.n_fixed
        segs = [(Segment(f"<{m.role}>", True), Segment(m.content, False)) for m in conversation.messages]
        flat = [s for pair in segs for s in pair]
        start = (Segment(conversation.reply_start, False),) if conversation.reply_start else ()
        return Prompt(tuple(flat[: 2 * n_fixed + 1]), (*flat[2 * n_fixed + 1 :], Segment("<assistant>", True), *start))

    def preview(self, conversation: Conversation) -> str:
        return self.render(conversation).text

    def count_tokens(self, text: str) -> int:
        return len(text)

    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Scores:
        prompt = self.render(conversation)
        self.prompts.append(prompt)
        n = len(prompt.text)
        user = [s.text for s in prompt.suffix if not s.trusted][-1:] or [""]
        state = [float(len(prompt.text)), float(user[0].count("好"))] if hidden else None  # [length, 好 in input]
        return Scores([self.scorer(prompt.text, c) for c in continuations], Usage(n, 0, 0), state)

    def complete(self, prompt: str, params: GenParams, echo: bool = False) -> Iterator[Chunk]:
        self.params.append(params)
        return complete_fake(prompt, params, echo)

    def score_batch(
        self, conversations: Sequence[Conversation], continuations: Sequence[str], hidden: bool = False
    ) -> list[Scores]:
        self.batches.append(len(conversations))
        return super().score_batch(conversations, continuations, hidden)

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        prompt = self.render(conversation)
        self.prompts.append(prompt)
        self.params.append(params)
        default = "ok" if params.schema is None else json.dumps(instance(params.schema))  # a schema is honored
        reply = self.replies.pop(0) if self.replies else default
        for ch in reply:
            yield Chunk(ch, logprobs=[TokenLogprob(ch, -0.5, (("x", -2.0),))] if params.logprobs is not None else None)
        yield Chunk("", "stop", Usage(len(prompt.text), 0, len(reply)))


def complete_fake(prompt: str, params: GenParams, echo: bool) -> Iterator[Chunk]:
    """A raw completion on the fake: each character is a token of logprob -1; the reply is "ok", cut to max_tokens."""
    if echo:
        yield Chunk("", prompt_logprobs=[TokenLogprob(c, None if i == 0 else -1.0) for i, c in enumerate(prompt)])
    reply = "ok"[: params.max_tokens]
    for c in reply:
        yield Chunk(c, logprobs=[TokenLogprob(c, -1.0)] if params.logprobs is not None else None)
    yield Chunk("", "length" if len(reply) < 2 else "stop", Usage(len(prompt), 0, len(reply)))


def instance(schema: Any, root: Any = None) -> Any:
    """The smallest value of a (checked) JSON Schema: what the fake replies when a schema constrains it."""
    root = schema if root is None else root
    if "$ref" in schema:
        return instance(root[schema["$ref"].split("/")[1]][schema["$ref"].split("/")[2]], root)
    if "anyOf" in schema:
        return instance(schema["anyOf"][0], root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {
            k: instance(v, root) for k, v in schema.get("properties", {}).items() if k in schema.get("required", [])
        }
    if kind == "array":
        return [instance(schema.get("items", {}), root) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 0)) if schema.get("maxLength", 1) else ""
    return {"integer": 0, "number": 0, "boolean": False, "null": None}[kind]


def patch_cli_engine(monkeypatch: Any, engine: Engine, home: Path) -> None:
    """Make every CLI command use a TaskService on `engine` (settings home in `home`) instead of loading a model."""
    from allinone import cli
    from allinone.service import TaskService

    def service(model: str | None, tasks_dir: Path | None, probe_layer: int | None = None) -> TaskService:
        return TaskService(cli._settings(home=home, tasks_dir=tasks_dir), engine)  # with the command's own options

    monkeypatch.setattr(cli, "_service", service)
