"""The engine contract: what the task layer needs from any inference backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
Scoring = Literal["exact", "first_token", "choice"]  # how an engine obtained label log-probabilities


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text. Template text may contain control tokens; user text never does."""

    text: str
    trusted: bool  # True: chat-template text, special tokens parsed; False: user content, plain text


@dataclass(frozen=True)
class Prompt:
    """A prompt rendered with the model's chat template, split into a fixed prefix and the rest.

    The prefix (system prompt, few-shot examples) is the same for every request of a task; engines
    keep it evaluated in their cache so that only the suffix costs compute.
    """

    prefix: tuple[Segment, ...]
    suffix: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return "".join(s.text for s in (*self.prefix, *self.suffix))


class PromptTokens:
    """Tokenizes prompts, keeping each task prefix's tokens so that only the suffix is tokenized per request."""

    def __init__(self, tokens_of: Callable[[Sequence[Segment], bool], list[int]], limit: int = 256) -> None:
        self._tokens_of, self._limit = tokens_of, limit  # tokens_of(segments, first): first = at the prompt start
        self._prefixes: dict[tuple[Segment, ...], list[int]] = {}

    def __call__(self, prompt: Prompt) -> tuple[list[int], int]:
        """All tokens of the prompt and how many of them are the fixed prefix."""
        prefix = self._prefixes.get(prompt.prefix)
        if prefix is None:
            prefix = self._tokens_of(prompt.prefix, True)
            if len(self._prefixes) > self._limit:
                self._prefixes.clear()
            self._prefixes[prompt.prefix] = prefix
        return prefix + self._tokens_of(prompt.suffix, not prompt.prefix), len(prefix)


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the KV cache, not recomputed
    completion_tokens: int = 0


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a fresh random seed
    grammar: str | None = None  # GBNF grammar constraining the output
    repeat_penalty: float = 1.0  # tokens already in the reply: logit / p (> 0) or * p (< 0); 1.0 = off


@dataclass
class Scores:
    logprobs: list[float]  # total log-probability of each continuation, in the order given
    usage: Usage
    hidden: list[float] | None = None  # final hidden state at the answer position, when asked for
    # how the log-probabilities were obtained: "exact" (every token of each continuation), "first_token" (a
    # remote server's top logprobs of the first token) or "choice" (no logprobs: the model chose one, 0 vs -1e9)
    scoring: Scoring = "exact"


@dataclass
class Chunk:
    """A piece of streamed text; the last chunk has `finish_reason` and the final `usage`."""

    text: str
    finish_reason: Literal["stop", "length"] | None = None
    usage: Usage | None = None
    truncated: bool = False  # last chunk: the input was cut to the task's limit
    trimmed_turns: int = 0  # last chunk: oldest history turns left out to fit the context window


@dataclass
class EngineInfo:
    backend: str
    model: str
    n_ctx: int
    details: dict[str, str | int] = field(default_factory=dict)


class Engine(ABC):
    """A loaded model behind a small interface: render, tokenize, score, stream.

    Implementations must be safe to call from several threads at once and say how.
    """

    info: EngineInfo
    # What `score(..., hidden=True)` returns: the final hidden state at the last prompt token, preceded,
    # when probe_layer is L, by the mean over the prompt's own tokens (after the cached task prefix) of the
    # hidden state after transformer layer L (0-based). A learned head says which one it was trained on.
    probe_layer: int | None = None

    @abstractmethod
    def render(self, messages: Sequence[Message], n_fixed: int) -> Prompt:
        """Render messages with the model's own chat template, generation prompt appended.

        The first `n_fixed` messages (and the template text up to the next message's content)
        form the cacheable prefix.
        """

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` as plain (user) text."""

    @abstractmethod
    def score(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Scores:
        """Total log-probability of each continuation right after the prompt.

        With `hidden`, also the hidden-state features `probe_layer` names, from the same pass.
        """

    def score_batch(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[Scores]:
        """`score` for several prompts; engines that evaluate them faster together override this.

        Batched results may differ from one-at-a-time results in the last bits (different batch shapes).
        """
        return [self.score(p, continuations) for p in prompts]

    @abstractmethod
    def stream(self, prompt: Prompt, params: GenParams) -> Iterator[Chunk]:
        """Generate text after the prompt; closing the iterator early frees the engine."""

    def generate(self, prompt: Prompt, params: GenParams) -> Chunk:
        """Non-streaming generation: the joined stream."""
        parts, last = [], Chunk("")
        for last in self.stream(prompt, params):
            parts.append(last.text)
        return Chunk("".join(parts), last.finish_reason, last.usage)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources."""
