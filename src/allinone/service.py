"""The task service: task name -> task, one model shared by every task, request options merged with task defaults."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .auto import AUTO, Pick, pick, picker_task
from .chat import ChatSession, Turn, model_messages, split_messages, stream_reply
from .classify import Classification, classify, classify_many, load_head, require_text
from .engines import Chunk, Conversation, Engine, GenParams, load_engine
from .engines.base import GENERATION_OPTIONS, TokenLogprob, Usage
from .errors import EngineError, InvalidInput, TaskDefinitionError, TaskNotFound, Unsupported
from .events import Classified, Done, Echoed, Event, Lane, Picked, TaskCall, Token
from .generate import Generated, limit_stream, token_budget
from .models import engine_for
from .settings import Settings
from .structured import parse_output
from .tasks import Task, load_tasks

__all__ = ["TaskCall", "TaskService", "result_of"]


class TaskService:
    """The tasks and the single engine that serves all of them; the CLI and the server both use it."""

    def __init__(self, settings: Settings, engine: Engine | None = None, probe_layer: int | None = None) -> None:
        self.settings = settings
        self._probe_layer = probe_layer
        self.tasks: dict[str, Task] = {name: self._limited(t) for name, t in load_tasks(settings.tasks_dir).items()}
        self._engine = engine
        self._load_lock = threading.Lock()
        self._previews: dict[str, str] = {}  # the start of each task's prompt, for request logs
        self._picker: Task | None = None

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

    def task(self, name: str, kind: str | None = None) -> Task:
        """The task called `name`; with `kind`, it must be of that kind (classify or generate)."""
        try:
            task = self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks))
            hint = f" (or '{AUTO}' to let the model pick)" if name != AUTO else ""
            raise TaskNotFound(f"unknown task '{name}'; known tasks: {known}{hint}") from None
        if kind is not None and task.kind != kind:
            raise InvalidInput(f"task '{name}' is a {task.kind} task, not {kind}")
        return task

    def pick_task(self, text: str) -> Pick:
        """The task the model picks for `text` by scoring the routable tasks' descriptions."""
        return pick(self.engine, self._picker_task(), text)

    def _picker_task(self) -> Task:
        if self._picker is None:
            self._picker = self._limited(picker_task(self.tasks.values()))
        return self._picker

    # --- one call, one stream of events ----------------------------------------------------------------

    def first_lane(self, call: TaskCall) -> Lane:
        """What the call's first work needs: a forward pass (auto, classifications, the combined flow's
        sentiment) or a reply being generated. Each Picked or Classified event says what comes next."""
        if call.task == AUTO or call.sentiment or self.task(call.task).kind == "classify":
            return "score"
        return "generate"

    def run(self, call: TaskCall) -> Iterator[Event]:
        """Run a call: the events it produces, the whole result last (Done). Everything is checked here, once:
        the text, the task, its options; a bad option fails before any model work on the task."""
        system, turns, text = split_messages(call.messages) if call.messages else (None, [], call.text)
        require_text(text)
        options = {k: v for k, v in call.options.items() if v is not None}
        name = call.task
        if name == AUTO:
            picked = self.pick_task(text)
            name = picked.task
            yield Picked(picked, "score" if self.task(name).kind == "classify" else "generate")
        task = self.task(name)
        if task.kind == "classify":
            if call.schema is not None or call.sentiment:
                raise Unsupported(f"task '{name}' is a classify task: it answers a label, not a reply")
            own = {k: v for k, v in options.items() if k not in GENERATION_OPTIONS}  # sampling changes no label
            task, _ = task.with_options(own, text)
            result = classify(self.engine, task, text, self.settings.use_heads)
            yield Classified(result)
            yield Done(result)
            return
        task, params, chosen = self._prepare(task, text, options, call.schema)
        if system is not None:  # the caller's own system prompt replaces the task's, and its examples
            task = task.model_copy(update={"system": system, "examples": [], "reply_start": {}})
        tag = label = None
        if call.sentiment:
            sentiment = classify(self.engine, self.task(call.sentiment, "classify"), text, self.settings.use_heads)
            yield Classified(sentiment, next_lane="generate")
            tag, label = self.task(call.sentiment).label(sentiment.label).display, sentiment.label
        session = call.session if call.session is not None else ChatSession(turns=turns)
        chunks = stream_reply(self.engine, task, session, text, params, tag, label)
        max_chars = task.generation.max_chars if task.generation else None
        chunks = limit_stream(chunks, max_chars) if max_chars is not None else chunks
        yield from self._reply(task, chunks, chosen, call.schema)

    def complete(self, prompt: str, options: Mapping[str, Any] | None = None, echo: bool = False) -> Iterator[Event]:
        """Continue raw text on the loaded model: no task, no chat template (OpenAI's /v1/completions)."""
        require_text(prompt)
        seed = None if self.settings.seed < 0 else self.settings.seed
        params = self._override(GenParams(seed=seed), options or {}, "completions")
        for chunk in self.engine.complete(prompt, params, echo):
            if chunk.prompt_logprobs is not None:
                yield Echoed(chunk.prompt_logprobs)
                continue
            yield from self._reply_chunk(chunk)
            if chunk.finish_reason is not None:
                usage = chunk.usage or Usage()
                yield Done(Generated("completions", "", chunk.finish_reason, usage))

    def _reply(self, task: Task, chunks: Iterable[Chunk], chosen: dict[str, str], schema: Any) -> Iterator[Event]:
        """Token events, then Done with the whole reply (and, with a schema, its parsed JSON)."""
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        last = Chunk("")
        for last in chunks:
            parts.append(last.text)
            logprobs += last.logprobs or []
            yield from self._reply_chunk(last)
        text = "".join(parts)
        data = None
        if schema is not None:  # a request's: a reply cut by max_tokens comes back as it is, as OpenAI does
            data = parse_output(schema, text, last.finish_reason) if last.finish_reason == "stop" else None
        elif task.output_schema is not None:
            data = parse_output(task.output_schema, text, last.finish_reason)
        usage = last.usage or Usage()
        result = Generated(
            task.name, text, last.finish_reason, usage, data, chosen, last.truncated, last.trimmed_turns, logprobs
        )
        yield Done(result)

    @staticmethod
    def _reply_chunk(chunk: Chunk) -> Iterator[Event]:
        if chunk.text or chunk.logprobs:
            yield Token(chunk.text, chunk.logprobs)

    def _prepare(
        self, task: Task, text: str, options: Mapping[str, Any], schema: Mapping[str, Any] | None
    ) -> tuple[Task, GenParams, dict[str, str]]:
        """A generate task with its own options filled in, its generation parameters (schema and length budget
        included) and the option values used."""
        options = {k: v for k, v in options.items() if v is not None}
        task, chosen = task.with_options({k: options.pop(k) for k in list(options) if k in task.options}, text)
        g = task.generation
        assert g is not None
        seed = g.seed if g.seed is not None else (None if self.settings.seed < 0 else self.settings.seed)
        base = GenParams(
            g.max_tokens,
            g.temperature,
            g.top_p,
            stop=tuple(g.stop),
            seed=seed,
            repeat_penalty=g.repeat_penalty,
            dry_multiplier=g.dry_multiplier,
        )
        params = self._override(base, options, task.name, task.options)
        if schema is not None or task.output_schema is not None:
            params = replace(params, schema=schema if schema is not None else task.output_schema)
        if g.max_chars is not None:
            params = replace(params, max_tokens=min(params.max_tokens, token_budget(self.engine, text, g.max_chars)))
        return task, params, chosen

    @staticmethod
    def _override(base: GenParams, options: Mapping[str, Any], name: str, own: Iterable[str] = ()) -> GenParams:
        """`base` with the request's generation options; an unknown option is an error naming the known ones."""
        options = {k: v for k, v in options.items() if v is not None}
        unknown = set(options) - set(GENERATION_OPTIONS)
        if unknown:
            mine = f"; task '{name}' options: {', '.join(own)}" if own else ""
            raise InvalidInput(
                f"unknown option(s): {', '.join(sorted(unknown))}{mine}; generation options: "
                f"{', '.join(GENERATION_OPTIONS)}"
            )
        if "stop" in options:
            options["stop"] = (options["stop"],) if isinstance(options["stop"], str) else tuple(options["stop"])
        return replace(base, **options)

    # --- the same, for callers that want one result --------------------------------------------------

    def classify(self, name: str, text: str, options: Mapping[str, Any] | None = None) -> Classification:
        task, _ = self.task(name, "classify").with_options(options or {}, text)
        return classify(self.engine, task, require_text(text), self.settings.use_heads)

    def classify_many(self, name: str, texts: Sequence[str]) -> list[Classification]:
        """Classify several texts with one task, scored side by side where the engine can."""
        return classify_many(self.engine, self.task(name, "classify"), texts, self.settings.use_heads)

    def generate(
        self,
        name: str,
        text: str,
        session: ChatSession | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Generated:
        """A generate task's whole reply; `data` holds the parsed JSON of a task with output_schema."""
        result: Generated = result_of(
            self.run(TaskCall(self.task(name, "generate").name, text, None, options or {}, session))
        )
        return result

    def warm(self, texts: Sequence[str] = ("你好", "hello")) -> None:
        """Compute every task's cached prefix now (and the classify tasks' calibration), for a message in each
        language, and let the engine make what a generate task's replies reuse (its DRY sampler), so that the first
        requests are as fast as later ones (`serve` does this before it is ready)."""
        for name, task in self.tasks.items():
            for text in texts:
                if task.kind == "classify":
                    self.classify(name, text)
                else:
                    filled, params, _ = self._prepare(task, text, {}, None)
                    messages, n_fixed = model_messages(filled, [Turn("user", text)])
                    self.engine.warm(Conversation.of(messages, n_fixed), params)
        if sum(t.routing.enabled for t in self.tasks.values()) >= 2:
            self.pick_task(texts[0])

    def prompt_preview(self, name: str, n: int = 50) -> str:
        """The first characters of the task's rendered prompt (its fixed prefix), for request logs; `auto`: the
        picker's."""
        preview = self._previews.get(name)
        if preview is None:
            fixed = (self._picker_task() if name == AUTO else self.task(name)).fixed_messages()
            preview = self._previews[name] = self.engine.preview(Conversation.of(fixed, len(fixed)))[:n]
        return preview[:n]


def result_of(events: Iterable[Event]) -> Any:
    """The result a call's events end with."""
    for event in events:
        if isinstance(event, Done):
            return event.result
    raise EngineError("the call ended without a result")
