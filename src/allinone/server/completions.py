"""OpenAI's (legacy) /v1/completions: raw text continued by the loaded model, with `echo` and prompt logprobs
(what lm-evaluation-harness's `local-completions` needs to score a text)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from itertools import accumulate
from typing import Any

from fastapi import APIRouter, Request

from ..engines.base import TokenLogprob
from ..errors import AllInOneError, TaskNotFound
from ..events import Done, Echoed, Event, Token
from .calls import Outcome, collect, events_of, later, note, start
from .errors import domain_error
from .openai_compat import ERRORS, completion_usage, refuse_unhonored, task_for
from .schemas import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from .state import Services, record, services
from .streaming import EventStream, ThreadedStream, sse

api = APIRouter(tags=["OpenAI-compatible"])
ANY_MODEL = "allinone"  # the loaded model itself, whatever it is


def check_model(model: str, svc: Services) -> None:
    """Every model id names the one loaded model here: `allinone`, the engine's own name, or a task's id."""
    if model in (ANY_MODEL, svc.service.engine.info.model):
        return
    try:
        task_for(model, svc)
    except TaskNotFound:
        raise TaskNotFound(f"unknown model '{model}'; use '{ANY_MODEL}' or an id of GET /v1/models") from None


def legacy_logprobs(entries: list[TokenLogprob], start: int = 0) -> CompletionLogprobs:
    """Token logprobs in the completions API's shape; `text_offset` counts from `start` in the returned text."""
    offsets = list(accumulate((len(e.token) for e in entries[:-1]), initial=start)) if entries else []
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[dict(e.top) if e.logprob is not None else None for e in entries],
        text_offset=offsets,
    )


def _choice(i: int, prompt: str, outcome: Outcome, echo: bool, logprobs: bool) -> CompletionChoice:
    text = (prompt if echo else "") + outcome.text
    entries = (outcome.prompt_logprobs if echo else []) + outcome.logprobs
    return CompletionChoice(
        index=i,
        text=text,
        finish_reason=outcome.generated.finish_reason,
        logprobs=legacy_logprobs(entries) if logprobs or echo else None,
    )


@api.post("/v1/completions", response_model=Completion, responses=ERRORS)
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Raw text completion on the loaded model (no chat template): `prompt` (one or several), `max_tokens`,
    `stop`, `stream`, `logprobs` (the tokens' and this many alternatives) and `echo` (the prompt and its
    tokens' logprobs before the completion; with `max_tokens: 0`, only that)."""
    svc = services(request)
    refuse_unhonored({k: v for k, v in (body.model_extra or {}).items() if not (k == "best_of" and v == 1)})
    check_model(body.model, svc)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    note(request, "completions", prompts[0], prompt="")
    logprobs = 0 if body.echo and body.logprobs is None else body.logprobs  # echo: the prompt tokens' logprobs
    options: dict[str, Any] = {"max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p}
    options |= {"stop": body.stop, "seed": body.seed, "logprobs": logprobs}
    envelope = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
    runs = [svc.service.complete(p, options, body.echo) for p in prompts]
    if body.stream:
        first_stream, first = await start(request, runs[0], "generate")
        streams = [first_stream, *(later(request, events, "generate") for events in runs[1:])]
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_chunks(request, streams, first, prompts, envelope, body, include_usage), streams)
    replies = [await collect(request, events, "generate") for events in runs]
    pairs = enumerate(zip(prompts, replies, strict=True))
    choices = [_choice(i, p, r, body.echo, body.logprobs is not None) for i, (p, r) in pairs]
    return Completion(**envelope, choices=choices, usage=completion_usage(record(request).usage))


def _chunk(envelope: dict[str, Any], i: int, text: str, finish: str | None = None, logprobs: Any = None) -> str:
    choice = {"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}
    return sse({**envelope, "object": "text_completion", "choices": [choice]})


async def _chunks(
    request: Request,
    streams: list[ThreadedStream[Event]],
    first: Event | None,
    prompts: list[str],
    envelope: dict[str, Any],
    body: CompletionRequest,
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """Each prompt's completion in turn (its echo first), then the usage and [DONE]."""
    rec = record(request)
    outcomes = [Outcome(rec) for _ in streams]
    want = body.logprobs is not None or body.echo
    try:
        for i, stream in enumerate(streams):
            async with aclosing(events_of(request, stream, first if i == 0 else None)) as events:
                async for event in events:
                    outcomes[i].add(event)
                    if isinstance(event, Echoed):
                        logprobs = legacy_logprobs(event.logprobs).model_dump() if want else None
                        yield _chunk(envelope, i, prompts[i], logprobs=logprobs)
                    elif isinstance(event, Token):
                        logprobs = legacy_logprobs(event.logprobs).model_dump() if want and event.logprobs else None
                        yield _chunk(envelope, i, event.text, logprobs=logprobs)
                    elif isinstance(event, Done):
                        yield _chunk(envelope, i, "", outcomes[i].generated.finish_reason)
            if rec.client_gone:
                return
    except AllInOneError as e:  # the response has started: the error goes in the stream
        rec.status, payload = domain_error(e)
        rec.error = payload["error"]["type"]
        yield sse(payload)
        return
    finally:
        for stream in streams:
            await stream.aclose()
        for outcome in outcomes:
            outcome.close()
    if include_usage:
        usage = completion_usage(rec.usage).model_dump()
        yield sse({**envelope, "object": "text_completion", "choices": [], "usage": usage})
    yield sse("[DONE]")
