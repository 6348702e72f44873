"""Task calls from async endpoints: the service's events stepped in worker threads, each phase on its own lane of
the model's slots, collected into an Outcome (joined) or passed on as they come (streamed)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import asdict, dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..auto import Pick
from ..chat import ChatSession
from ..classify import Classification
from ..engines.base import TokenLogprob, Usage
from ..events import Classified, Done, Echoed, Event, Lane, Picked, TaskCall, Token
from ..generate import Generated
from ..logs import RequestRecord
from .admission import ClientGone, RequestTimeout
from .schemas import PickOut, Timing, UsageOut
from .state import owner, record, services
from .streaming import END, ThreadedStream, follow


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(**asdict(usage))


def timing(rec: RequestRecord, sentiment_ms: float | None = None) -> Timing:
    return Timing(total_ms=round(rec.elapsed_ms(), 1), first_token_ms=rec.first_token_ms, sentiment_ms=sentiment_ms)


def note(request: Request, task: str, text: str, prompt: str | None = None) -> RequestRecord:
    """Put the task, its input and the start of its prompt (the task's, unless given) in the request's record."""
    rec, svc = record(request), services(request)
    svc.admission.check_ready()  # before anything touches the model
    rec.task, rec.input = task, svc.log.keep(text)
    rec.prompt = svc.service.prompt_preview(task) if prompt is None else svc.log.keep(prompt)
    return rec


async def open_session(request: Request, session_id: str | None) -> ChatSession:
    """The caller's session with this id, or a new one (saved with its first turns); read off the event loop."""
    return await run_in_threadpool(services(request).sessions.open, session_id, owner(request))


def pick_out(found: Pick | None) -> PickOut | None:
    if found is None:
        return None
    return PickOut(task=found.task, probability=found.probability, probabilities=found.probabilities)


@dataclass
class Outcome:
    """What a call has produced so far; usage adds up in the request's record as it comes."""

    rec: RequestRecord
    pick: Pick | None = None  # auto: the task the model picked
    sentiment: Classification | None = None  # the combined flow's, sent before the reply
    sentiment_ms: float | None = None
    parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # the reply tokens', when asked for
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # a raw completion's prompt, with echo
    result: Classification | Generated | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, Picked):
            self.pick = event.pick
            self.rec.task = event.pick.task
            self.rec.add_usage(event.pick.usage)
        elif isinstance(event, Classified):
            self.rec.add_usage(event.result.usage)
            if event.next_lane is not None:
                self.sentiment, self.sentiment_ms = event.result, round(self.rec.elapsed_ms(), 1)
        elif isinstance(event, Token):
            self.logprobs += event.logprobs or []
            if event.text:
                self.rec.mark_first_token()
                self.parts.append(event.text)
        elif isinstance(event, Echoed):
            self.prompt_logprobs += event.logprobs
        elif isinstance(event, Done):
            self.result = event.result
            if isinstance(event.result, Generated):
                self.rec.add_usage(event.result.usage)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def generated(self) -> Generated:
        """The reply of a call that generated one."""
        assert isinstance(self.result, Generated), "the call ended without a reply"
        return self.result

    @property
    def classification(self) -> Classification:
        """The answer of a call that classified."""
        assert isinstance(self.result, Classification), "the call ended without a classification"
        return self.result

    def close(self) -> None:
        """Record the output; a reply stopped early never got its usage, so count its pieces (about one token
        each) as the tokens generated."""
        if isinstance(self.result, Classification):
            self.rec.output = self.result.label
            return
        self.rec.output = f"{self.sentiment.label} | {self.text}" if self.sentiment else self.text
        if self.result is None:
            self.rec.usage.completion_tokens += len(self.parts)


def run_call(request: Request, call: TaskCall) -> tuple[Iterator[Event], Lane]:
    """The service's events for a call, and the lane its first work needs (an unknown task fails here)."""
    service = services(request).service
    return service.run(call), service.first_lane(call)


async def start(request: Request, events: Iterator[Event], lane: Lane) -> tuple[ThreadedStream[Event], Event | None]:
    """Wait for a slot, then step the events once before answering, so that their errors (empty text, a bad
    option, a prompt too long) become HTTP statuses rather than a broken stream."""
    admission = services(request).admission
    deadline = admission.deadline(record(request))
    stream: ThreadedStream[Event] = ThreadedStream(events, admission, deadline, lane=lane)
    try:
        first = await stream.next()
    except BaseException:
        await stream.aclose()
        raise
    if stream.timed_out:
        raise RequestTimeout(f"the request ran longer than {admission.timeout:g} s")
    return stream, None if first is END else first  # type: ignore[return-value]


def later(request: Request, events: Iterator[Event], lane: Lane) -> ThreadedStream[Event]:
    """The events as a stream that waits for its slot on its first step (inside a response already started)."""
    admission = services(request).admission
    return ThreadedStream(events, admission, admission.deadline(record(request)), lane=lane)


async def events_of(
    request: Request, stream: ThreadedStream[Event], first: Event | None
) -> AsyncGenerator[Event, None]:
    """The first event (None: not stepped yet), then the rest until the end or until the client goes away."""
    if first is not None:
        yield first
    async with aclosing(follow(request, stream)) as rest:
        async for event in rest:
            yield event


async def collect(request: Request, events: Iterator[Event], lane: Lane, outcome: Outcome | None = None) -> Outcome:
    """Run a call to its end (or until the client goes away) and collect what it produced."""
    outcome = outcome or Outcome(record(request))
    stream, first = await start(request, events, lane)
    try:
        async with aclosing(events_of(request, stream, first)) as all_events:
            async for event in all_events:
                outcome.add(event)
    finally:
        await stream.aclose()
        outcome.close()
    if stream.timed_out:
        raise RequestTimeout(f"the request ran longer than {services(request).admission.timeout:g} s")
    if outcome.result is None:  # the client went away before the end: nobody is left to answer
        raise ClientGone("the client closed the connection before the result")
    return outcome
