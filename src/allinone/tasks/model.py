"""The task definition: a strict pydantic model of one YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..engines.base import Message


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

    input: str = Field(min_length=1)
    output: str = Field(min_length=1, description="Classify: a label id. Generate: the expected answer.")


class Generation(_Strict):
    """Default generation limits; requests may override them."""

    max_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Calibration(_Strict):
    """Contextual calibration: divide out the label bias the prompt has on content-free inputs."""

    content_free: list[str] = Field(
        min_length=1, description="Inputs with no content (e.g. 'N/A'); their mean label probabilities are the bias."
    )


class Truncation(_Strict):
    """How over-long inputs are cut before they reach the model."""

    max_chars: int = Field(2000, ge=16)
    head_ratio: float = Field(0.5, ge=0.0, le=1.0, description="Share of max_chars kept from the start.")

    def apply(self, text: str) -> tuple[str, bool]:
        """Keep the head and the tail of an over-long text; returns (text, was_cut)."""
        if len(text) <= self.max_chars:
            return text, False
        head = int(self.max_chars * self.head_ratio)
        tail = self.max_chars - head
        return text[:head] + "……" + (text[-tail:] if tail else ""), True


class Task(_Strict):
    """A capability of the shared model, defined entirely by prompts."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$")
    description: str = Field(min_length=1)
    kind: Literal["classify", "generate"]
    system: str = Field(min_length=1, description="System prompt; part of the cached prefix.")
    examples: list[Example] = Field(default_factory=list)
    input_template: str = Field("{text}", description="How the user text is wrapped; must contain {text}.")
    labels: list[Label] | None = None
    display_template: str = Field("{emoji} {display}", description="Display line of a classify result.")
    calibration: Calibration | None = Field(None, description="Classify only: contextual calibration.")
    head: str | None = Field(
        None, description="Classify only: a learned linear head file beside this YAML (see `allinone train-head`)."
    )
    generation: Generation | None = None
    multi_turn: bool = Field(False, description="Generate tasks only: keeps a conversation history.")
    truncation: Truncation = Field(default_factory=Truncation)

    _source: Path | None = PrivateAttr(None)

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
            if self.generation is not None or self.multi_turn:
                raise ValueError("generation / multi_turn only apply to generate tasks")
        else:
            if self.labels is not None or self.calibration is not None or self.head is not None:
                raise ValueError("labels, calibration and head only apply to classify tasks")
            if self.generation is None:
                object.__setattr__(self, "generation", Generation())
        return self

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
