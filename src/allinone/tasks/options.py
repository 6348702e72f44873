"""Task options: named request options with allowed values that fill placeholders in a task's prompts."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InvalidInput

__all__ = ["ByScript", "ChoiceOption", "NumberValue", "TaskOption", "cjk_share"]

DETECT = "auto"  # an option value that asks for it to be detected from the text (e.g. target=auto)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: "²".isdigit() is true and int("²") fails
SHOWN_CHARS = 40  # characters of a refused value repeated in the error
SCRIPT_CHARS = 2000  # characters of the text that decide its script: enough, and cheap on any input


def cjk_share(text: str) -> float:
    """Share of the letters among the text's first SCRIPT_CHARS characters that are CJK ideographs (0 when it has
    no letters)."""
    letters = [c for c in text[:SCRIPT_CHARS] if c.isalpha()]
    return sum(bool(_CJK.match(c)) for c in letters) / len(letters) if letters else 0.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChoiceOption(_Strict):
    """One allowed value of an option."""

    fill: str = Field("", description="Text put where the option's placeholder `{name}` appears in the prompts.")
    max_chars: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Generate tasks: the output's hard character limit with this value (cut at a sentence end).",
    )


class NumberValue(_Strict):
    """Lets an option also take a whole number, e.g. a length in characters."""

    min: int = Field(1, ge=0, description="Smallest number accepted.")
    max: int = Field(ge=1, description="Largest number accepted.")
    fill: str = Field(description="Text for the placeholder; `{value}` is replaced by the number.")
    max_chars: bool = Field(False, description="The number is also the output's hard character limit.")

    @model_validator(mode="after")
    def _range(self) -> NumberValue:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if "{value}" not in self.fill:
            raise ValueError("fill must contain the placeholder {value}")
        return self


class ByScript(_Strict):
    """Resolves the value `auto` from the script of the input text."""

    cjk: str = Field(description="The choice used when most letters of the text are Chinese characters.")
    other: str = Field(description="The choice used otherwise.")


class TaskOption(_Strict):
    """A named request option: its allowed values, its default, and what each value puts in the prompts."""

    description: str = Field(min_length=1, description="What the option does; shown by `tasks show` and the API.")
    default: str = Field(description="Value used when a request does not give one.")
    choices: dict[str, ChoiceOption] = Field(min_length=1, description="Allowed values by name.")
    number: NumberValue | None = Field(None, description="Also accept a whole number in a range.")
    auto: ByScript | None = Field(None, description="Accept the value `auto`, resolved from the text's script.")

    @model_validator(mode="after")
    def _consistent(self) -> TaskOption:
        bad = [c for c in self.choices if not re.fullmatch(r"[A-Za-z0-9_\-]+", c) or c.isdigit()]
        if bad:
            raise ValueError(f"choice names must be words of letters, digits, _ or -: {bad}")
        if self.auto is not None:
            if DETECT in self.choices:
                raise ValueError("'auto' is resolved by `auto`; it cannot also be a choice")
            missing = [c for c in (self.auto.cjk, self.auto.other) if c not in self.choices]
            if missing:
                raise ValueError(f"auto names unknown choices {missing}; declared {list(self.choices)}")
        try:
            self.resolve(self.default, "")
        except InvalidInput:
            raise ValueError(f"default '{self.default}' is not an allowed value ({self.allowed()})") from None
        return self

    def allowed(self) -> str:
        """The allowed values in words, for error messages."""
        values = list(self.choices) + ([DETECT] if self.auto else [])
        number = f", or a number {self.number.min}-{self.number.max}" if self.number else ""
        return ", ".join(values) + number

    def resolve(self, value: Any, text: str) -> tuple[str, ChoiceOption]:
        """The concrete value name and its choice; `auto` is decided by the text, a number builds a choice."""
        value = str(value).strip()
        if value == DETECT and self.auto is not None:
            value = self.auto.cjk if cjk_share(text) > 0.5 else self.auto.other
        if value in self.choices:
            return value, self.choices[value]
        if self.number is not None and _NUMBER.fullmatch(value) and self.number.min <= int(value) <= self.number.max:
            n = int(value)
            return value, ChoiceOption(
                fill=self.number.fill.replace("{value}", value), max_chars=n if self.number.max_chars else None
            )
        shown = value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
        raise InvalidInput(f"'{shown}' is not allowed; use {self.allowed()}")
