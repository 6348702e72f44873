"""Generate tasks: a reply's hard length limit, and the joined result with its parsed JSON."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .engines.base import Chunk, Engine, TokenLogprob, Usage

__all__ = ["Generated", "cut_at_sentence", "limit_stream", "token_budget"]

_ENDS = "。！？；!?;\n"


@dataclass
class Generated:
    task: str
    text: str
    finish_reason: str | None
    usage: Usage = field(default_factory=Usage)
    data: Any = None  # the parsed JSON, for tasks that declare output_schema
    options: dict[str, str] = field(default_factory=dict)  # the task options used, `auto` resolved
    truncated: bool = False  # the input was cut to the task's limit
    trimmed_turns: int = 0  # old history turns left out to fit the context window
    logprobs: list[TokenLogprob] = field(default_factory=list)  # each token's, when they were asked for


def sentence_ends(text: str, final: bool) -> list[int]:
    """Offsets just after each sentence end; a '.' counts before a space (or at the very end when final)."""
    ends = []
    for i, ch in enumerate(text):
        nxt = text[i + 1 : i + 2]
        if ch in _ENDS or (ch == "." and (nxt.isspace() or (final and not nxt))):
            ends.append(i + 1)
    return ends


def cut_at_sentence(text: str, max_chars: int) -> str:
    """The longest start of `text` within max_chars that ends a sentence; if none does, a cut at a clause break
    (else a word break) in the second half, marked with '…'."""
    if len(text) <= max_chars:
        return text
    ends = [i for i in sentence_ends(text[: max_chars + 1], final=False) if i <= max_chars]
    if ends:
        return text[: ends[-1]]
    head = text[: max_chars - 1]
    for breaks in ("，,、：:", " "):
        at = max((i for i, ch in enumerate(head) if ch in breaks), default=-1)
        if at > max_chars // 2:
            return head[:at].rstrip() + "…"
    return head.rstrip() + "…"


def limit_stream(chunks: Iterable[Chunk], max_chars: int) -> Iterator[Chunk]:
    """Pass a reply on sentence by sentence while it fits max_chars; cut it at a sentence end when it does not.

    Text after the last sentence end is held back until the sentence completes, so nothing sent is ever
    taken back. Past the limit the rest of the reply is drained (its usage comes with the last chunk).
    """
    full, sent, cut = "", 0, False
    for chunk in chunks:
        if not cut:
            full += chunk.text
            if len(full) > max_chars:
                keep, cut = cut_at_sentence(full, max_chars), True
            elif chunk.finish_reason == "length":  # the token budget ran out mid-sentence
                ends = sentence_ends(full, final=True)
                keep = full[: ends[-1]] if ends else full
            elif chunk.finish_reason is not None:
                keep = full
            else:
                ends = sentence_ends(full, final=False)
                keep = full[: ends[-1]] if ends else ""
            if len(keep) > sent:
                yield Chunk(keep[sent:])
                sent = len(keep)
        if chunk.finish_reason is not None:
            yield replace(chunk, text="", finish_reason="length" if cut else chunk.finish_reason)


def token_budget(engine: Engine, text: str, max_chars: int) -> int:
    """Tokens enough for max_chars characters in the language of `text` (a reply that runs over is cut)."""
    sample = text[:400]
    per_char = engine.count_tokens(sample) / max(1, len(sample))
    return math.ceil(max_chars * max(per_char, 0.2) * 1.5) + 8
