"""A fake engine for pure-logic tests: it records prompts and replays queued outputs."""

from __future__ import annotations

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
        return Prompt(tuple(flat[: 2 * n_fixed + 1]), (*flat[2 * n_fixed + 1 :], Segment("<assistant>", True)))

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

    def score_batch(self, conversations: Sequence[Conversation], continuations: Sequence[str]) -> list[Scores]:
        self.batches.append(len(conversations))
        return super().score_batch(conversations, continuations)

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        prompt = self.render(conversation)
        self.prompts.append(prompt)
        self.params.append(params)
        reply = self.replies.pop(0) if self.replies else "ok"
        for ch in reply:
            yield Chunk(ch)
        yield Chunk("", "stop", Usage(len(prompt.text), 0, len(reply)))


def patch_cli_engine(monkeypatch: Any, engine: Engine, home: Path) -> None:
    """Make every CLI command use a Router on `engine` (settings home in `home`) instead of loading a model."""
    from allinone import cli
    from allinone.router import Router

    def router(model: str | None, tasks_dir: Path | None, probe_layer: int | None = None) -> Router:
        return Router(cli._settings(home=home, tasks_dir=tasks_dir), engine)  # with the command's own options

    monkeypatch.setattr(cli, "_router", router)
