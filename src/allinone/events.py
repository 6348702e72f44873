"""What a task call asks for, and the one stream of events every call gives back: the CLI, the HTTP and OpenAI
endpoints and the Python API only format these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .auto import Pick
from .chat import ChatSession
from .classify import Classification
from .engines.base import Message, TokenLogprob
from .generate import Generated

__all__ = ["Classified", "Done", "Echoed", "Event", "Lane", "Picked", "TaskCall", "Token"]

Lane = Literal["generate", "score"]  # what the work needs: a reply being generated, or one forward pass


@dataclass
class TaskCall:
    """One request to run a task."""

    task: str  # a task name, or `auto` to let the model pick one
    text: str = ""  # the input; with `messages`, their last user message
    messages: Sequence[Message] | None = None  # a whole conversation the caller holds (OpenAI style)
    options: Mapping[str, Any] = field(default_factory=dict)  # the task's own options and generation options
    session: ChatSession | None = None  # a multi-turn task's conversation, continued and kept
    sentiment: str | None = None  # the combined flow: this classify task first, its label shown to the reply
    schema: Mapping[str, Any] | None = None  # a request's JSON schema, in place of the task's own


@dataclass(frozen=True)
class Picked:
    """`auto`: the task the model picked; the rest runs on `next_lane`."""

    pick: Pick
    next_lane: Lane


@dataclass(frozen=True)
class Classified:
    """A classification: the task's answer, or (with `next_lane`) the combined flow's sentiment before the reply."""

    result: Classification
    next_lane: Lane | None = None


@dataclass(frozen=True)
class Token:
    """A piece of the reply as it is generated (with its tokens' logprobs when they were asked for)."""

    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True)
class Echoed:
    """A raw completion's prompt tokens and their logprobs (`echo`), before the completion."""

    logprobs: list[TokenLogprob]


@dataclass(frozen=True)
class Done:
    """The whole result, last."""

    result: Classification | Generated


Event = Picked | Classified | Token | Echoed | Done
