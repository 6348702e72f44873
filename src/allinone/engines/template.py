"""Render messages with the model's own Jinja chat template, keeping user text apart from template text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property

from ..errors import EngineError
from .base import Message, Prompt, Segment

_MARK = "\x02{}\x03"  # stands in for message contents while rendering
_MARK_RE = re.compile("\x02(\\d+)\x03")


class ChatTemplate:
    """A chat template from the model's metadata (`tokenizer.chat_template`)."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token

    @cached_property
    def _template(self):  # type: ignore[no-untyped-def]
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise EngineError(f"chat template error: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
        return env.from_string(self.source)

    def _render(self, messages: Sequence[dict[str, str]]) -> str:
        out: str = self._template.render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token
        )
        return out

    def render(self, messages: Sequence[Message], n_fixed: int, reply_start: str = "") -> Prompt:
        """Render to segments; everything before the content of message `n_fixed` is the prefix; `reply_start`
        (plain text) follows the generation prompt, as the start of the assistant's reply.

        Contents are replaced by markers while rendering, so the template's own control tokens are
        known exactly and user text can be tokenized as plain text (no injected `<|im_end|>`).
        """
        start = (Segment(reply_start, False),) if reply_start else ()
        marked = [{"role": m.role, "content": _MARK.format(i)} for i, m in enumerate(messages)]
        rendered = self._render(marked)
        pieces = _MARK_RE.split(rendered)  # text, index, text, index, ..., text
        indices = [int(i) for i in pieces[1::2]]
        if sorted(indices) != list(range(len(messages))):  # template rewrote contents: no split possible
            full = self._render([{"role": m.role, "content": m.content} for m in messages])
            return Prompt((), (Segment(full, True), *start))
        prefix: list[Segment] = []
        suffix: list[Segment] = []
        target = prefix
        for k, text in enumerate(pieces):
            if k % 2 == 0:
                if text:
                    target.append(Segment(text, True))
                continue
            i = int(text)
            if i >= n_fixed:
                target = suffix
            if messages[i].content:
                target.append(Segment(messages[i].content, False))
        return Prompt(tuple(prefix), (*suffix, *start))
