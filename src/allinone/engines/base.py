"""The engine contract: what the task layer needs from any inference backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import Unsupported

Role = Literal["system", "user", "assistant"]
Scoring = Literal["exact", "first_token", "choice"]  # how an engine obtained label log-probabilities


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """What a task hands an engine: messages, the first `n_fixed` of which are the task's fixed prefix (system
    prompt, few-shot examples), the same for every request of the task, so engines keep it cached; and the words
    the assistant's reply starts with (`reply_start`: the model writes what follows; only where the engine
    `continues_reply`)."""

    messages: tuple[Message, ...]
    n_fixed: int = 0
    reply_start: str = ""

    @classmethod
    def of(cls, messages: Sequence[Message], n_fixed: int = 0, reply_start: str = "") -> Conversation:
        return cls(tuple(messages), n_fixed, reply_start)


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
    schema: Mapping[str, Any] | None = field(default=None, hash=False)  # JSON Schema the output must match
    logprobs: int | None = None  # with each generated token, its log-probability and this many alternatives
    repeat_penalty: float = 1.0  # tokens already in the reply: logit / p (> 0) or * p (< 0); 1.0 = off
    # DRY ("don't repeat yourself"): a token that would extend a sequence already seen, in the reply or in the
    # request's own messages, loses multiplier * 1.75 ** (length - 2) of its logit; 0 = off
    dry_multiplier: float = 0.0


GENERATION_OPTIONS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "repeat_penalty",
    "dry_multiplier",
    "logprobs",
)


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model (before sampling settings), with the most likely alternatives."""

    token: str
    logprob: float | None  # None: the first token of a prompt, which nothing predicts
    top: tuple[tuple[str, float], ...] = ()
    raw: bytes = b""  # the token's bytes (a character can span tokens, so `token` may hold U+FFFD)


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
    logprobs: list[TokenLogprob] | None = None  # the generated tokens of this chunk (GenParams.logprobs)
    prompt_logprobs: list[TokenLogprob] | None = None  # a raw completion's prompt tokens (`complete(echo=True)`)


@dataclass
class EngineInfo:
    backend: str
    model: str
    n_ctx: int
    details: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Busy:
    """How much model work a local engine has done since it loaded: forward passes (`llama_decode` calls, each
    batching every running request) and the seconds spent in them. Its rate of growth is the model's utilisation:
    near 1 s per second, more requests can only wait."""

    steps: int
    seconds: float


@dataclass(frozen=True)
class Slots:
    """How many requests an engine really runs at once: replies being generated, and classifications (one
    forward pass each), which an engine that batches can run beside the replies instead of after them."""

    generate: int = 1
    score: int = 1


class Engine(ABC):
    """A loaded model behind a small interface: count tokens, score continuations, stream a reply.

    Implementations must be safe to call from several threads at once and say how (`slots`).
    """

    info: EngineInfo
    slots: Slots = Slots()
    # What `score(..., hidden=True)` returns: the final hidden state at the last prompt token, preceded,
    # when probe_layer is L, by the mean over the prompt's own tokens (after the cached task prefix) of the
    # hidden state after transformer layer L (0-based). A learned head says which one it was trained on.
    probe_layer: int | tuple[int, ...] | None = None  # a tuple (llama.cpp): each layer's mean in turn
    continues_reply: bool = True  # whether `stream` takes a Conversation.reply_start (it renders the prompt itself)

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` as plain (user) text."""

    def preview(self, conversation: Conversation) -> str:
        """The prompt as the model sees it, for request logs; engines with their own template render it."""
        return "\n".join(f"{m.role}: {m.content}" for m in conversation.messages)

    @abstractmethod
    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Scores:
        """Total log-probability of each continuation as the start of the assistant's reply.

        With `hidden`, also the hidden-state features `probe_layer` names, from the same pass.
        """

    def warm(self, conversation: Conversation, params: GenParams | None = None) -> None:  # noqa: B027 - only engines with a local cache do it
        """Compute and cache the conversation's fixed prefix now, so that the first request that uses it is as fast
        as later ones (engines whose prefix cache lives elsewhere do nothing). With `params` (a reply's), also make
        now what replies with them reuse."""

    def score_batch(
        self, conversations: Sequence[Conversation], continuations: Sequence[str], hidden: bool = False
    ) -> list[Scores]:
        """`score` for several conversations; engines that evaluate them faster together override this.

        Batched results may differ from one-at-a-time results in the last bits (different batch shapes).
        """
        return [self.score(c, continuations, hidden) for c in conversations]

    @abstractmethod
    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        """Generate the assistant's reply; closing the iterator early frees the engine."""

    def complete(self, prompt: str, params: GenParams, echo: bool = False) -> Iterator[Chunk]:
        """Continue raw text (no chat template); with `echo` the first chunk carries the prompt's tokens and,
        with `params.logprobs`, their log-probabilities."""
        raise Unsupported(f"the {self.info.backend} engine does not run raw text completions")

    def generate(self, conversation: Conversation, params: GenParams) -> Chunk:
        """Non-streaming generation: the joined stream."""
        parts, last = [], Chunk("")
        for last in self.stream(conversation, params):
            parts.append(last.text)
        return Chunk("".join(parts), last.finish_reason, last.usage)

    def busy(self) -> Busy | None:
        """The model work done so far, where the engine measures it (llama.cpp); None elsewhere."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources."""
