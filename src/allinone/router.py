"""Task name -> task, and one model shared by every task; request options merged with task defaults."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .chat import ChatSession, Turn, model_messages, split_messages, stream_reply
from .classify import Classification, classify, classify_many, load_head
from .engines import Chunk, Conversation, Engine, GenParams, Message, load_engine
from .errors import InvalidInput, TaskDefinitionError, TaskNotFound
from .generate import Generated, join_reply, limit_stream, token_budget
from .models import engine_for
from .routing import AUTO, Route, route, routing_task
from .settings import Settings
from .tasks import Task, load_tasks

__all__ = ["Router"]

_OPTION_KEYS = {"max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "logprobs"}  # of every generate task


class Router:
    """The tasks and the single engine that serves all of them; the CLI and the server both use it."""

    def __init__(self, settings: Settings, engine: Engine | None = None, probe_layer: int | None = None) -> None:
        self.settings = settings
        self._probe_layer = probe_layer
        self.tasks: dict[str, Task] = {name: self._limited(t) for name, t in load_tasks(settings.tasks_dir).items()}
        self._engine = engine
        self._load_lock = threading.Lock()
        self._heads: dict[str, str] = {}
        self._routing: Task | None = None

    def _limited(self, task: Task) -> Task:
        """The task with the input limits it leaves unset taken from the settings; no input gets more than
        half the context window."""
        s = self.settings
        limits = task.truncation.with_defaults(s.max_input_chars, s.max_input_tokens)
        limits = limits.model_copy(update={"max_tokens": min(limits.max_tokens or s.n_ctx, s.n_ctx // 2)})
        return task.model_copy(update={"truncation": limits})

    @property
    def engine(self) -> Engine:
        """The model, loaded on first use and then shared."""
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    self._engine = load_engine(self.settings, self.probe_layer())
        return self._engine

    def probe_layer(self) -> int | None:
        """The hidden-state layer the engine must expose: the one given, else (with heads in use) the one
        the tasks' learned heads were trained on."""
        if self._probe_layer is not None or not self.settings.use_heads:
            return self._probe_layer
        kind = engine_for(self.settings.model) if self.settings.engine == "auto" else self.settings.engine
        if kind == "openai":
            return None  # no hidden states there: classify gives the prompt's answer
        layers = {head.probe_layer for t in self.tasks.values() if (head := load_head(t)) is not None}
        if len(layers) > 1:
            raise TaskDefinitionError(
                f"the learned heads read different hidden-state layers: {sorted(map(str, layers))}"
            )
        return layers.pop() if layers else None

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks))
            hint = f" (or '{AUTO}' to let the model pick)" if name != AUTO else ""
            raise TaskNotFound(f"unknown task '{name}'; known tasks: {known}{hint}") from None

    def route(self, text: str) -> Route:
        """The task the model picks for `text` by scoring the routable tasks' descriptions."""
        if self._routing is None:
            self._routing = self._limited(routing_task(self.tasks.values()))
        return route(self.engine, self._routing, text)

    def prepare(
        self, name: str, text: str, options: Mapping[str, Any] | None = None
    ) -> tuple[Task, GenParams, dict[str, str]]:
        """A generate task with its options filled in, its generation parameters (grammar, length budget
        included) and the option values used."""
        task = self._kind(name, "generate")
        options = {k: v for k, v in (options or {}).items() if v is not None}
        task, chosen = task.with_options({k: options.pop(k) for k in list(options) if k in task.options}, text)
        params = self.params(task, options)
        if task.output_schema is not None:
            params = replace(params, schema=task.output_schema)
        max_chars = task.generation.max_chars if task.generation else None
        if max_chars is not None:
            params = replace(params, max_tokens=min(params.max_tokens, token_budget(self.engine, text, max_chars)))
        return task, params, chosen

    def params(self, task: Task, options: Mapping[str, Any] | None = None) -> GenParams:
        """The task's generation defaults with request overrides applied."""
        g = task.generation
        assert g is not None
        base = GenParams(
            g.max_tokens,
            g.temperature,
            g.top_p,
            stop=tuple(g.stop),
            seed=g.seed if g.seed is not None else (None if self.settings.seed < 0 else self.settings.seed),
        )
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = set(options) - _OPTION_KEYS
        if unknown:
            own = f"; task '{task.name}' options: {', '.join(task.options)}" if task.options else ""
            raise InvalidInput(f"unknown option(s): {', '.join(sorted(unknown))}{own}")
        if "stop" in options:
            options["stop"] = (options["stop"],) if isinstance(options["stop"], str) else tuple(options["stop"])
        return replace(base, **options)

    def classify(self, name: str, text: str, options: Mapping[str, Any] | None = None) -> Classification:
        task, _ = self._kind(name, "classify").with_options(options or {}, text)
        return classify(self.engine, task, text, self.settings.use_heads)

    def classify_many(self, name: str, texts: Sequence[str]) -> list[Classification]:
        """Classify several texts with one task, scored as multi-sequence batches where the engine can."""
        return classify_many(self.engine, self._kind(name, "classify"), texts, self.settings.use_heads)

    def stream(
        self,
        name: str,
        text: str,
        session: ChatSession | None = None,
        options: Mapping[str, Any] | None = None,
        sentiment: str | None = None,
    ) -> Iterator[Chunk]:
        """Stream a generate task's reply; task options (e.g. `length`) may sit beside generation options.
        `sentiment`: the detected sentiment, shown to the model as a tag before the message (combined flow)."""
        task, params, _ = self.prepare(name, text, options)
        return self.reply(task, params, text, session, sentiment)

    def generate(
        self,
        name: str,
        text: str,
        session: ChatSession | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Generated:
        """A generate task's whole reply; `data` holds the parsed JSON of a task with output_schema."""
        task, params, chosen = self.prepare(name, text, options)
        return join_reply(task, self.reply(task, params, text, session), chosen)

    def reply(
        self, task: Task, params: GenParams, text: str, session: ChatSession | None, sentiment: str | None = None
    ) -> Iterator[Chunk]:
        """Stream the reply of a prepared generate task (see `prepare`)."""
        chunks = stream_reply(self.engine, task, session or ChatSession(), text, params, sentiment)
        max_chars = task.generation.max_chars if task.generation else None
        return limit_stream(chunks, max_chars) if max_chars is not None else chunks

    def stream_messages(
        self,
        name: str,
        messages: Sequence[Message],
        options: Mapping[str, Any] | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Iterator[Chunk]:
        """Reply to a conversation the caller holds (OpenAI style), with the task's options, grammar and
        length limit as in `stream`; a system message replaces the task's system prompt and examples; a
        `schema` (a request's response_format) constrains the reply instead of the task's own."""
        system, turns, text = split_messages(messages)
        task, params, _ = self.prepare(name, text, options)
        if schema is not None:
            params = replace(params, schema=schema)
        if system is not None:
            task = task.model_copy(update={"system": system, "examples": []})
        return self.reply(task, params, text, ChatSession(turns=turns))

    def complete(self, prompt: str, options: Mapping[str, Any] | None = None, echo: bool = False) -> Iterator[Chunk]:
        """Continue raw text on the loaded model: no task, no chat template (OpenAI's /v1/completions)."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        unknown = set(options) - _OPTION_KEYS
        if unknown:
            raise InvalidInput(f"unknown option(s): {', '.join(sorted(unknown))}")
        if "stop" in options:
            options["stop"] = (options["stop"],) if isinstance(options["stop"], str) else tuple(options["stop"])
        seed = None if self.settings.seed < 0 else self.settings.seed
        return self.engine.complete(prompt, replace(GenParams(seed=seed), **options), echo)

    def warm(self, texts: Sequence[str] = ("你好", "hello")) -> None:
        """Compute every task's cached prefix now (and the classify tasks' calibration), for a message in each
        language, so that the first requests are as fast as later ones (`serve` does this before it is ready)."""
        for name, task in self.tasks.items():
            for text in texts:
                if task.kind == "classify":
                    self.classify(name, text)
                else:
                    messages, n_fixed = model_messages(task, [Turn("user", text)])
                    self.engine.warm(Conversation.of(messages, n_fixed))
        if sum(t.routing.enabled for t in self.tasks.values()) >= 2:
            self.route(texts[0])

    def prompt_head(self, name: str, n: int = 50) -> str:
        """The first characters of the task's rendered prompt (its fixed prefix), for request logs."""
        head = self._heads.get(name)
        if head is None:
            fixed = self.task(name).fixed_messages()
            head = self._heads[name] = self.engine.preview(Conversation.of(fixed, len(fixed)))[:n]
        return head[:n]

    def analyze_and_reply(
        self,
        session: ChatSession,
        text: str,
        options: Mapping[str, Any] | None = None,
        sentiment_task: str = "sentiment",
        chat_task: str = "chat",
    ) -> Iterator[Classification | Chunk]:
        """The combined flow: the sentiment result first, then the reply that knows it."""
        task, params, _ = self.prepare(chat_task, text, options)  # a bad option fails before any model work
        result = self.classify(sentiment_task, text)
        yield result
        yield from self.reply(task, params, text, session, self.sentiment_tag(result))

    def sentiment_tag(self, result: Classification) -> str:
        """What the combined flow tells the chat model about a message: the label's display name (e.g. 负面)."""
        return self.task(result.task).label(result.label).display

    def _kind(self, name: str, kind: str) -> Task:
        task = self.task(name)
        if task.kind != kind:
            raise InvalidInput(f"task '{name}' is a {task.kind} task, not {kind}")
        return task
