"""Chat sessions: history, the sentiment-aware combined flow, and streamed replies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .engines.base import Chunk, Conversation, Engine, GenParams, Message
from .errors import InvalidInput
from .tasks import Task

__all__ = ["ChatSession", "Turn", "split_messages", "stream_reply"]

SENTIMENT_TAG = "[情感标签：{label}]"
MESSAGE_TOKENS = 6  # what the chat template adds around a message: <|im_start|>role\n ... <|im_end|>\n, and a margin


@dataclass
class Turn:
    role: Literal["user", "assistant"]
    content: str  # what the person typed or the assistant said: the visible history
    sentiment: str | None = None  # detected sentiment of a user turn; shown to the model only
    at: float = field(default_factory=time.time)


@dataclass
class ChatSession:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    turns: list[Turn] = field(default_factory=list)
    on_append: Callable[[str, list[Turn]], None] | None = field(default=None, repr=False, compare=False)

    def reset(self) -> None:
        self.turns.clear()

    def append(self, *turns: Turn) -> None:
        """Add turns to the history, saving them first when the session belongs to a durable store."""
        if self.on_append is not None:
            self.on_append(self.id, list(turns))
        self.turns += turns

    @property
    def history(self) -> list[dict[str, str]]:
        """The visible conversation, without sentiment tags."""
        return [{"role": t.role, "content": t.content} for t in self.turns]


def split_messages(messages: Sequence[Message]) -> tuple[str | None, list[Turn], str]:
    """A caller's whole conversation (OpenAI style) as (system prompt or None, earlier turns, last user text)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system") or None
    rest = [m for m in messages if m.role != "system"]
    if not rest or rest[-1].role != "user":
        raise InvalidInput("the conversation must end with a user message")
    turns = [Turn("assistant" if m.role == "assistant" else "user", m.content) for m in rest[:-1]]
    return system, turns, rest[-1].content


def _model_content(task: Task, turn: Turn) -> str:
    if turn.role == "assistant":
        return turn.content
    text = task.input_template.replace("{text}", turn.content)
    return f"{SENTIMENT_TAG.format(label=turn.sentiment)} {text}" if turn.sentiment else text


def model_messages(task: Task, turns: list[Turn]) -> tuple[list[Message], int]:
    """What the model sees: fixed prefix, then every turn with its sentiment tag."""
    fixed = task.fixed_messages()
    return [*fixed, *(Message(t.role, _model_content(task, t)) for t in turns)], len(fixed)


def fit_history(engine: Engine, task: Task, history: list[Turn], user: Turn, budget: int) -> list[Turn]:
    """The most recent turns that fit in `budget` tokens together with the task's fixed prefix (system prompt,
    examples) and the new message: the oldest go first, and the kept history starts with a user turn."""
    messages, n_fixed = model_messages(task, [*history, user])
    cost = [engine.count_tokens(m.content) + MESSAGE_TOKENS for m in messages]  # the template's own tokens added
    total, first = sum(cost), 0
    while first < len(history) and (total > budget or (first and history[first].role == "assistant")):
        total -= cost[n_fixed + first]
        first += 1
    return history[first:]


def stream_reply(
    engine: Engine,
    task: Task,
    session: ChatSession,
    text: str,
    params: GenParams,
    sentiment: str | None = None,
) -> Iterator[Chunk]:
    """Stream the assistant's reply; the turn pair is added to the history once the reply is complete.
    The last chunk says whether the input was cut and how many old turns were left out to fit the context."""
    if task.kind != "generate":
        raise InvalidInput(f"task '{task.name}' is not a generate task")
    text, truncated = task.truncation.apply(text, engine.count_tokens)  # checked by the task service
    user = Turn("user", text, sentiment)
    history = session.turns if task.multi_turn else []
    n_ctx = engine.info.n_ctx
    kept = fit_history(engine, task, history, user, n_ctx - min(params.max_tokens, n_ctx // 4)) if history else []
    messages, n_fixed = model_messages(task, [*kept, user])
    parts = []
    for chunk in engine.stream(Conversation.of(messages, n_fixed), params):
        parts.append(chunk.text)
        if chunk.finish_reason is not None:
            chunk = replace(chunk, truncated=truncated, trimmed_turns=len(history) - len(kept))
        yield chunk
    if task.multi_turn:
        session.append(user, Turn("assistant", "".join(parts)))  # the pair in one transaction
