"""Model calls from async routes: classification off the event loop, and streamed or joined replies."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..auto import Pick
from ..chat import ChatSession
from ..classify import Classification
from ..engines.base import Chunk, TokenLogprob, Usage
from ..errors import EmptyText
from ..logs import RequestRecord
from ..structured import parse_output
from ..tasks import Task
from .admission import RequestTimeout
from .schemas import PickOut, Timing, UsageOut
from .state import owner, record, services
from .streaming import END, ThreadedStream, follow


def require_text(text: str) -> str:
    """Validate text at the edge: empty or whitespace-only is a 400 in both languages."""
    if not text.strip():
        raise EmptyText()
    return text


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(**asdict(usage))


def timing(rec: RequestRecord, sentiment_ms: float | None = None) -> Timing:
    return Timing(total_ms=round(rec.elapsed_ms(), 1), first_token_ms=rec.first_token_ms, sentiment_ms=sentiment_ms)


def note(request: Request, task: str, text: str, prompt: str | None = None) -> RequestRecord:
    """Put the task, its input and the head of its prompt (the task's, unless given) in the request's record."""
    rec, svc = record(request), services(request)
    svc.admission.check_ready()  # before anything touches the model
    rec.task, rec.input = task, svc.log.keep(text)
    rec.prompt = svc.service.prompt_preview(task) if prompt is None else svc.log.keep(prompt)
    return rec


async def open_session(request: Request, session_id: str | None) -> ChatSession:
    """The caller's session with this id, or a new one (saved with its first turns); read off the event loop."""
    return await run_in_threadpool(services(request).sessions.open, session_id, owner(request))


async def classify(request: Request, task: str, text: str, options: dict[str, Any] | None = None) -> Classification:
    """Run a classify task (with its own options, if any) in the thread pool, filling in the request's record."""
    rec = note(request, task, text)
    svc = services(request)
    async with svc.admission.hold("score", svc.admission.deadline(rec), again=_routed(request)):
        result = await run_in_threadpool(svc.service.classify, task, require_text(text), options)
    rec.add_usage(result.usage)
    rec.output = result.label
    return result


async def pick_task(request: Request, text: str) -> Pick:
    """The task the model picks for `text` (task `auto`); its usage counts toward the request's."""
    svc = services(request)
    async with svc.admission.hold("score", svc.admission.deadline(record(request))):
        found = await run_in_threadpool(svc.service.pick_task, require_text(text))
    request.state.routed = True  # the task's own model call then counts as the same place in the queue
    record(request).add_usage(found.usage)
    return found


def _routed(request: Request) -> bool:
    return bool(getattr(request.state, "routed", False))


def pick_out(found: Pick | None) -> PickOut | None:
    if found is None:
        return None
    return PickOut(task=found.task, probability=found.probability, probabilities=found.probabilities)


def parsed(task: Task, text: str, finish_reason: str | None) -> Any:
    """A task with output_schema: its reply's JSON (OutputInvalid when the reply does not parse)."""
    return None if task.output_schema is None else parse_output(task.output_schema, text, finish_reason)


@dataclass
class Reply:
    """What a generation has produced so far; its usage adds up in the request's record."""

    rec: RequestRecord
    parts: list[str] = field(default_factory=list)
    finish_reason: Any = None
    classification: Classification | None = None  # the combined flow's sentiment, sent before the reply
    sentiment_ms: float | None = None
    truncated: bool = False  # the input was cut to the task's limit
    trimmed_turns: int = 0  # old turns left out to fit the context window
    logprobs: list[TokenLogprob] = field(default_factory=list)  # the tokens', when asked for
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # a raw completion's prompt, with echo

    def add(self, item: Chunk) -> None:
        self.logprobs += item.logprobs or []
        self.prompt_logprobs += item.prompt_logprobs or []
        if item.text:
            self.rec.mark_first_token()
            self.parts.append(item.text)
        if item.usage is not None:
            self.finish_reason = item.finish_reason
            self.truncated, self.trimmed_turns = item.truncated, item.trimmed_turns
            self.rec.add_usage(item.usage)

    def classified(self, result: Classification) -> None:
        """The sentiment came first (its usage is already in the record)."""
        self.classification = result
        self.sentiment_ms = round(self.rec.elapsed_ms(), 1)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def summary(self) -> str:
        """For the log: the reply, after the label in the combined flow."""
        return f"{self.classification.label} | {self.text}" if self.classification else self.text

    def close(self) -> None:
        """Record the output; a stream stopped early never got its usage, so count its chunks (about one
        token each) as the tokens generated."""
        self.rec.output = self.summary()
        if self.finish_reason is None:
            self.rec.usage.completion_tokens += len(self.parts)


async def start_stream(request: Request, items: Iterator[Any]) -> tuple[ThreadedStream[Any], Any]:
    """Wait for the model, then step the generator once before answering, so that its errors (empty text,
    prompt too long) become HTTP statuses rather than a broken stream."""
    admission = services(request).admission
    deadline = admission.deadline(record(request))
    stream: ThreadedStream[Any] = ThreadedStream(items, admission, deadline, again=_routed(request))
    try:
        first = await stream.next()
    except BaseException:
        await stream.aclose()
        raise
    if stream.timed_out:
        raise RequestTimeout(f"the request ran longer than {admission.timeout:g} s")
    return stream, first


async def items_of(request: Request, stream: ThreadedStream[Any], first: Any) -> AsyncGenerator[Any, None]:
    """The first item (None: the stream has not been stepped yet), then the rest until the end or until the
    client goes away."""
    if first is END:
        await stream.aclose()
        return
    if first is not None:
        yield first
    async with aclosing(follow(request, stream)) as rest:
        async for item in rest:
            yield item


async def join(request: Request, items: Iterator[Any], reply: Reply | None = None) -> Reply:
    """Run a generation to its end (or until the client goes away) and collect it."""
    reply = reply or Reply(record(request))
    stream, first = await start_stream(request, items)
    try:
        async with aclosing(items_of(request, stream, first)) as all_items:
            async for item in all_items:
                reply.add(item)
    finally:
        await stream.aclose()
        reply.close()
    if stream.timed_out:
        raise RequestTimeout(f"the request ran longer than {services(request).admission.timeout:g} s")
    return reply
