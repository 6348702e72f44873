"""Chat sessions: history, the sentiment-aware combined flow, and streamed replies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .engines.base import Chunk, Conversation, Engine, GenParams, Message
from .errors import InvalidInput
from .tasks import Task, cjk_share

__all__ = ["ChatSession", "Turn", "reply_start", "split_messages", "stream_reply"]

# How the combined flow shows the detected sentiment to the model, in the message's language ({label}: the
# sentiment task's display text, {label_en}: its English word, {text}: the message). The chat task's examples
# are written with the same tags. Chosen on the tuning half of benchmarks/chat_quality.py.
SENTIMENT_TAG = {
    "zh": "[用户情绪：{label}] {text}",
    "en": "[User mood: {label_en}] {text}",
}
_ENGLISH_LABELS = {"正面": "positive", "负面": "negative", "中性": "neutral"}
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


def _chinese(text: str) -> bool:
    return cjk_share(text) > 0.5


def _model_content(task: Task, turn: Turn) -> str:
    if turn.role == "assistant":
        return turn.content
    text = task.input_template.replace("{text}", turn.content)
    if not turn.sentiment:
        return text
    tag = SENTIMENT_TAG["zh" if _chinese(turn.content) else "en"]
    return tag.format(label=turn.sentiment, label_en=_ENGLISH_LABELS.get(turn.sentiment, turn.sentiment), text=text)


def fixed_messages(task: Task, text: str) -> list[Message]:
    """The task's system prompt and examples. In a conversation the examples in the language of the message
    being answered come last: a small model replies in the language of the nearest example, whatever the
    system prompt asks (the 0.5B model: benchmarks/chat_quality.py). Each order is its own cached prefix."""
    fixed = task.fixed_messages()
    if not task.multi_turn:
        return fixed
    pairs = [fixed[i : i + 2] for i in range(1, len(fixed), 2)]
    pairs.sort(key=lambda pair: _chinese(pair[0].content) == _chinese(text))  # stable: same-language pairs last
    return [fixed[0], *(m for pair in pairs for m in pair)]


def model_messages(task: Task, turns: list[Turn]) -> tuple[list[Message], int]:
    """What the model sees: fixed prefix, then every turn with its sentiment tag."""
    fixed = fixed_messages(task, turns[-1].content)
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


def reply_start(engine: Engine, task: Task, label: str | None, text: str) -> str:
    """The words the reply to a message whose detected sentiment is `label` (a label id) starts with, in the
    message's language: the task's `reply_start`; "" without one or where the engine cannot continue a reply."""
    if label is None or not engine.continues_reply:
        return ""
    return task.reply_start.get(label, {}).get("zh" if _chinese(text) else "en", "")


def stream_reply(
    engine: Engine,
    task: Task,
    session: ChatSession,
    text: str,
    params: GenParams,
    sentiment: str | None = None,
    label: str | None = None,
) -> Iterator[Chunk]:
    """Stream the assistant's reply; the turn pair is added to the history once the reply is complete.
    `sentiment` is the detected sentiment's display text, shown to the model in the tag; `label` its label id,
    which chooses the task's `reply_start`: the first chunk, and part of the reply kept in the history.
    The last chunk says whether the input was cut and how many old turns were left out to fit the context."""
    if task.kind != "generate":
        raise InvalidInput(f"task '{task.name}' is not a generate task")
    text, truncated = task.truncation.apply(text, engine.count_tokens)  # checked by the task service
    user = Turn("user", text, sentiment)
    history = session.turns if task.multi_turn else []
    n_ctx = engine.info.n_ctx
    kept = fit_history(engine, task, history, user, n_ctx - min(params.max_tokens, n_ctx // 4)) if history else []
    messages, n_fixed = model_messages(task, [*kept, user])
    start = reply_start(engine, task, label, text)
    parts = [start]
    if start:
        yield Chunk(start)
    for chunk in engine.stream(Conversation.of(messages, n_fixed, start), params):
        parts.append(chunk.text)
        if chunk.finish_reason is not None:
            chunk = replace(chunk, truncated=truncated, trimmed_turns=len(history) - len(kept))
        yield chunk
    if task.multi_turn:
        session.append(user, Turn("assistant", "".join(parts)))  # the pair in one transaction
