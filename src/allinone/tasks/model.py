"""The task definition: a strict pydantic model of one YAML file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..engines.base import GENERATION_OPTIONS, Message
from ..errors import InputTooLong, InvalidInput
from .options import TaskOption

RESERVED_NAMES = {"auto"}  # `auto` asks the model to pick the task
GEN_OPTIONS = set(GENERATION_OPTIONS)  # request options of every generate task
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class FieldProblem(ValueError):
    """A whole-task check that fails because of one key; the loader names that key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Strict):
    """One class of a classify task."""

    id: str = Field(pattern=r"^[A-Za-z0-9_\-\u4e00-\u9fff]+$", description="Stable id returned to callers.")
    display: str = Field(min_length=1, description="Text shown to people, e.g. 正面.")
    emoji: str = Field("", description="Shown before the display text.")
    words: list[str] = Field(min_length=1, description="Verbaliser words whose log-probabilities are scored.")

    @field_validator("words")
    @classmethod
    def _words_not_blank(cls, v: list[str]) -> list[str]:
        if any(not w.strip() for w in v):
            raise ValueError("verbaliser words must not be blank")
        return v


class Example(_Strict):
    """A few-shot example held in the cached prefix."""

    input: str = Field(min_length=1, description="The example's user text.")
    output: str = Field(min_length=1, description="Classify: a label id. Generate: the expected answer.")


class Generation(_Strict):
    """Default generation limits; requests may override them."""

    max_tokens: int = Field(256, ge=1, le=8192, description="Most tokens in a reply.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling: keep the most likely tokens up to p.")
    repeat_penalty: float = Field(
        1.0, ge=1.0, le=2.0, description="Penalty on tokens already in the reply (as llama.cpp's); 1 is off."
    )
    dry_multiplier: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="DRY: a penalty on tokens that would repeat a run of tokens already in the request's messages "
        "or the reply (as llama.cpp's dry_multiplier); 0 is off.",
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end the reply (not included).")
    seed: int | None = Field(None, description="Sampling seed; unset uses ALLINONE_SEED.")
    max_chars: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Hard limit on the reply's characters: max_tokens follows it; a reply is cut at a sentence end.",
    )


class Calibration(_Strict):
    """Contextual calibration: divide out the label bias the prompt has on content-free inputs."""

    content_free: list[str] = Field(
        min_length=1, description="Inputs with no content (e.g. 'N/A'); their mean label probabilities are the bias."
    )


class Truncation(_Strict):
    """How long an input may be, and what happens to a longer one: cut (its start and end kept) or refused."""

    max_chars: int | None = Field(
        None, ge=16, description="Longest input, in characters; unset: the server's ALLINONE_MAX_INPUT_CHARS."
    )
    max_tokens: int | None = Field(
        None, ge=16, description="Longest input, in tokens; unset: ALLINONE_MAX_INPUT_TOKENS (at most n_ctx / 2)."
    )
    start_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("start_share", "head_ratio"),  # head_ratio: the name before 0.2
        description="Share of a cut input kept from the start (the rest comes from the end).",
    )
    policy: Literal["cut", "reject"] = Field(
        "cut", description="cut: keep the start and the end, and say so in the result; reject: refuse it (HTTP 413)."
    )

    def with_defaults(self, max_chars: int, max_tokens: int) -> Truncation:
        """These limits, with the unset ones filled in."""
        return self.model_copy(
            update={"max_chars": self.max_chars or max_chars, "max_tokens": self.max_tokens or max_tokens}
        )

    def _cut(self, text: str, n: int) -> str:
        start = int(n * self.start_share)
        end = n - start
        return text[:start] + "……" + (text[-end:] if end else "")

    def _tokens(self, text: str, count_tokens: Callable[[str], int] | None) -> int:
        """The text's tokens; 0 when no limit or counter applies, or when it surely fits (a token holds
        at least one UTF-8 byte, a character at most four)."""
        if self.max_tokens is None or count_tokens is None or len(text) * 4 <= self.max_tokens:
            return 0
        return count_tokens(text)

    def apply(self, text: str, count_tokens: Callable[[str], int] | None = None) -> tuple[str, bool]:
        """The text within the limits (tokens counted with `count_tokens`, when given) and whether it was cut;
        InputTooLong for an over-long text when the policy is `reject`."""
        over_chars = self.max_chars is not None and len(text) > self.max_chars
        n_tokens = 0 if over_chars else self._tokens(text, count_tokens)
        if not over_chars and (self.max_tokens is None or n_tokens <= self.max_tokens):
            return text, False
        if self.policy == "reject":
            size = f"{len(text)} characters" if over_chars else f"{n_tokens} tokens"
            most = f"{self.max_chars} characters" if over_chars else f"{self.max_tokens} tokens"
            raise InputTooLong(f"the input is {size}; this task accepts at most {most}: shorten it")
        chars = min(len(text), self.max_chars or len(text))
        kept = self._cut(text, chars) if over_chars else text
        limit = self.max_tokens
        while limit is not None and chars > 1 and (n := self._tokens(kept, count_tokens)) > limit:
            chars = max(1, min(chars - 1, int(chars * limit / n * 0.95)))  # shrink in proportion, with a margin
            kept = self._cut(text, chars)
        return kept, True


class Routing(_Strict):
    """How `auto` routing sees a task: whether it may be picked, and inputs that show what it is for."""

    enabled: bool = Field(True, description="Whether `auto` may pick this task.")
    examples: list[str] = Field(
        default_factory=list,
        description="Typical inputs for this task; auto routing shows them to the model as few-shot examples.",
    )

    @field_validator("examples")
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        if any(not e.strip() for e in v):
            raise ValueError("routing examples must not be blank")
        return v


class Task(_Strict):
    """A capability of the shared model, defined entirely by prompts."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$", description="Task name; must match the file name.")
    description: str = Field(min_length=1, description="What the task does; `auto` routing reads it to pick a task.")
    kind: Literal["classify", "generate"] = Field(description="classify: score labels. generate: write a reply.")
    system: str = Field(min_length=1, description="System prompt; part of the cached prefix.")
    examples: list[Example] = Field(default_factory=list, description="Few-shot examples in the cached prefix.")
    input_template: str = Field("{text}", description="How the user text is wrapped; must contain {text}.")
    options: dict[str, TaskOption] = Field(
        default_factory=dict,
        description="Named request options; a value fills the placeholder {name} in system / input_template.",
    )
    labels: list[Label] | None = Field(None, description="Classify only: the label set, at least two.")
    display_template: str = Field("{emoji} {display}", description="Display line of a classify result.")
    calibration: Calibration | None = Field(None, description="Classify only: contextual calibration.")
    head: str | None = Field(
        None, description="Classify only: a learned linear head file beside this YAML (see `allinone train-head`)."
    )
    generation: Generation | None = Field(None, description="Generate only: default generation settings.")
    multi_turn: bool = Field(False, description="Generate tasks only: keeps a conversation history.")
    reply_start: dict[str, dict[Literal["zh", "en"], str]] = Field(
        default_factory=dict,
        description="Generate tasks only: in the combined flow, the words a reply starts with when the message's "
        "detected sentiment is this label id (e.g. negative), by the message's language (zh, en); the model writes "
        "the rest. Engines that cannot continue a started reply (openai) leave it out.",
    )
    output_schema: dict[str, Any] | None = Field(
        None,
        description="Generate tasks only: a JSON Schema (bounded subset) the reply is constrained to; "
        "the result carries the parsed JSON.",
    )
    routing: Routing = Field(default_factory=lambda: Routing(), description="How `auto` routing sees this task.")
    truncation: Truncation = Field(default_factory=Truncation, description="How over-long inputs are cut.")

    _source: Path | None = PrivateAttr(None)
    _grammar: str | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_NAMES:
            raise ValueError(f"'{v}' is reserved (it asks the model to pick a task)")
        return v

    @field_validator("options")
    @classmethod
    def _option_names(cls, v: dict[str, TaskOption]) -> dict[str, TaskOption]:
        bad = [n for n in v if not re.fullmatch(r"[a-z][a-z0-9_]*", n) or n in GEN_OPTIONS or n == "text"]
        if bad:
            raise ValueError(f"option names must be lowercase words and not text or {sorted(GEN_OPTIONS)}: {bad}")
        return v

    @field_validator("output_schema")
    @classmethod
    def _schema_is_supported(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from ..structured import check_schema

        if v is not None:
            check_schema(v)
        return v

    @field_validator("input_template")
    @classmethod
    def _has_text_slot(cls, v: str) -> str:
        if "{text}" not in v:
            raise ValueError("must contain the placeholder {text}")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> Task:
        if self.kind == "classify":
            if not self.labels or len(self.labels) < 2:
                raise ValueError("a classify task needs at least two labels")
            ids = [label.id for label in self.labels]
            if len(set(ids)) != len(ids):
                raise ValueError(f"label ids must be unique: {ids}")
            unknown = [ex.output for ex in self.examples if ex.output not in ids]
            if unknown:
                raise ValueError(f"examples name unknown labels {unknown}; declared {ids}")
            if self.generation is not None or self.multi_turn or self.reply_start:
                raise ValueError("generation / multi_turn / reply_start only apply to generate tasks")
        else:
            if self.labels is not None or self.calibration is not None or self.head is not None:
                raise ValueError("labels, calibration and head only apply to classify tasks")
            if self.generation is None:
                object.__setattr__(self, "generation", Generation())
        if self.output_schema is not None and (self.kind != "generate" or self.multi_turn):
            raise FieldProblem("output_schema", "only applies to single-turn generate tasks")
        self._check_placeholders()
        return self

    def _check_placeholders(self) -> None:
        for key in ("system", "input_template"):
            unknown = set(_PLACEHOLDER.findall(getattr(self, key))) - set(self.options) - {"text"}
            if unknown:
                raise FieldProblem(key, f"placeholder(s) {sorted(unknown)} are not declared under options")
        for name, option in self.options.items():
            slot = "{" + name + "}"
            number_limit = option.number is not None and option.number.max_chars
            uses_limit = number_limit or any(c.max_chars for c in option.choices.values())
            if slot not in self.system and slot not in self.input_template and not uses_limit:
                raise FieldProblem(f"options.{name}", f"{slot} appears in neither system nor input_template")
            if uses_limit and self.kind != "generate":
                raise FieldProblem(f"options.{name}", "max_chars only applies to generate tasks")

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def head_path(self) -> Path | None:
        """The head file, relative to the YAML file that declares it."""
        if self.head is None:
            return None
        base = self._source.parent if self._source is not None else Path.cwd()
        return base / self.head

    def label(self, label_id: str) -> Label:
        assert self.labels is not None
        return next(label for label in self.labels if label.id == label_id)

    def answer_for(self, output: str) -> str:
        """What the assistant says in a few-shot example: a label's first word, or the text."""
        return self.label(output).words[0] if self.kind == "classify" else output

    def fixed_messages(self) -> list[Message]:
        """System prompt and few-shot examples: the cacheable prefix of every request."""
        msgs = [Message("system", self.system)]
        for ex in self.examples:
            msgs.append(Message("user", self.input_template.replace("{text}", ex.input)))
            msgs.append(Message("assistant", self.answer_for(ex.output)))
        return msgs

    def user_message(self, text: str) -> Message:
        return Message("user", self.input_template.replace("{text}", text))

    @property
    def grammar(self) -> str | None:
        """The llama.cpp grammar of output_schema, built on first use."""
        if self.output_schema is not None and self._grammar is None:
            from ..structured import schema_to_gbnf

            self._grammar = schema_to_gbnf(self.output_schema)
        return self._grammar

    def with_options(self, values: Mapping[str, Any], text: str) -> tuple[Task, dict[str, str]]:
        """This task with its option placeholders filled (defaults where a value is missing), and the
        resolved values; `text` decides `auto` values."""
        unknown = set(values) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InvalidInput(f"task '{self.name}' has no option(s) {sorted(unknown)}; its options: {known}")
        system, template, chosen = self.system, self.input_template, {}
        generation = self.generation
        for name, option in self.options.items():
            try:
                value, choice = option.resolve(values.get(name, option.default), text)
            except InvalidInput as e:
                raise InvalidInput(f"option '{name}' of task '{self.name}': {e}") from None
            chosen[name] = value
            system = system.replace("{" + name + "}", choice.fill)
            template = template.replace("{" + name + "}", choice.fill)
            if choice.max_chars is not None and generation is not None:
                generation = generation.model_copy(update={"max_chars": choice.max_chars})
        if not self.options:
            return self, chosen
        self.grammar  # noqa: B018 - built once here, then shared by every filled copy
        update = {"system": system, "input_template": template, "generation": generation}
        return self.model_copy(update=update), chosen
