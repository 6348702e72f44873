"""OpenAI-compatible routes: every task is a model `allinone-<task>` on /v1/chat/completions."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Any

import anyio
from fastapi import APIRouter, Request

from ..auto import AUTO
from ..classify import Classification
from ..engines.base import Message, TokenLogprob, Usage
from ..errors import AllInOneError, InvalidInput, TaskNotFound, Unsupported
from ..events import Event, Lane, TaskCall, Token
from ..structured import JSON_OBJECT, UnsupportedSchema, check_request_schema
from .calls import Outcome, collect, events_of, later, note, pick_out, run_call, start, timing
from .errors import domain_error
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ClassificationOut,
    CompletionMessage,
    CompletionUsage,
    ErrorOut,
    ModelCard,
    ModelList,
    OpenAIMessage,
    PromptTokensDetails,
    ResponseFormat,
    TokenLogprobOut,
    TopLogprob,
)
from .state import Services, record, services
from .streaming import EventStream, ThreadedStream, sse

api = APIRouter(tags=["OpenAI-compatible"])

PREFIX = "allinone-"
_CREATED = int(time.time())
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Empty text, a conversation not ending with a user turn"},
    404: {"model": ErrorOut, "description": "Unknown model"},
    413: {"model": ErrorOut, "description": "Body or prompt too large"},
}
_SSE_EXAMPLE = (
    'data: {"id": "chatcmpl-…", "object": "chat.completion.chunk", "choices": [{"index": 0, '
    '"delta": {"role": "assistant", "content": "你好"}, "finish_reason": null}], ...}\n\n'
    "data: [DONE]\n\n"
)


def task_for(model: str, svc: Services) -> str:
    """The task behind a model id: `allinone-<task>` or the bare task name."""
    name = model.removeprefix(PREFIX)
    if name == AUTO or name in svc.service.tasks:
        return name
    if model in svc.service.tasks:
        return model
    known = ", ".join(PREFIX + t for t in sorted(svc.service.tasks))
    raise TaskNotFound(f"unknown model '{model}'; known models: {known}")


def to_messages(messages: list[OpenAIMessage]) -> list[Message]:
    """OpenAI messages as plain ones: `developer` is a system message, text parts are joined."""
    out = []
    for m in messages:
        if isinstance(m.content, list):
            if any(p.type != "text" for p in m.content):
                raise InvalidInput("only text content parts are supported")
            content = "".join(p.text or "" for p in m.content)
        else:
            content = m.content or ""
        out.append(Message("system" if m.role == "developer" else m.role, content))
    return out


def completion_usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def classification_out(result: Classification) -> ClassificationOut:
    return ClassificationOut(
        label=result.label, display=result.display, probabilities=result.probabilities, scoring=result.scoring
    )


@api.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Every task as a model id, `allinone-<task>`, and `allinone-auto`, which lets the model pick the task."""
    tasks = services(request).service.tasks.values()
    cards = [
        ModelCard(
            id=PREFIX + t.name, created=_CREATED, task=t.name, kind=t.kind, description=" ".join(t.description.split())
        )
        for t in tasks
    ]
    auto = "The model picks the task for the last user message. 由模型为消息选择任务。"
    cards.append(ModelCard(id=PREFIX + AUTO, created=_CREATED, task=AUTO, kind="auto", description=auto))
    return ModelList(data=cards)


@api.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {"example": _SSE_EXAMPLE}}}},
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    """Chat completions for any task. Generate tasks reply to the conversation (a system message replaces
    the task's prompt), `n` replies side by side, constrained by `response_format`, with `logprobs`; classify
    tasks classify the last user message and answer with the display line, the label and probabilities in
    `classification` (and as `logprobs`). `stream: true` sends chunks, then `[DONE]`. A field this server does
    not honor is a 400."""
    svc = services(request)
    refuse_unhonored(body.model_extra)
    name = task_for(body.model, svc)
    messages = to_messages(body.messages)
    note(request, name, messages[-1].content)
    if name != AUTO and svc.service.task(name).kind == "classify":
        if body.response_format is not None and body.response_format.type != "text":
            raise Unsupported("response_format applies to generate models; a classify model answers a label")
        if body.n > 1:
            raise Unsupported("n > 1 applies to generate models; a classification has one answer")
    schema = response_schema(body.response_format)
    slots = svc.admission.sizes.get("generate") or svc.service.engine.slots.generate
    if body.n > slots:
        raise Unsupported(f"n may be at most {slots} here (the engine's reply slots)")
    options = body.options() | ({"logprobs": body.top_logprobs or 0} if body.logprobs else {})
    calls = [TaskCall(name, "", messages, _choice_options(options, i), schema=schema) for i in range(body.n)]
    runs = [run_call(request, call) for call in calls]
    envelope = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        first_stream, first = await start(request, *runs[0])
        streams = [first_stream, *(later(request, *r) for r in runs[1:])]
        return EventStream(_chunks(request, body, streams, first, envelope, include_usage), streams)
    outcomes = await _collect_all(request, runs)
    if isinstance(outcomes[0].result, Classification):
        return _classification(outcomes[0], body, envelope)
    rec = record(request)
    choices = [
        Choice(
            index=i,
            message=CompletionMessage(content=o.generated.text),
            finish_reason=o.generated.finish_reason,
            logprobs=logprobs_out(o.generated.logprobs) if body.logprobs else None,
        )
        for i, o in enumerate(outcomes)
    ]
    g = outcomes[0].generated
    return ChatCompletion(
        **envelope,
        choices=choices,
        usage=completion_usage(rec.usage),
        data=g.data,
        route=pick_out(outcomes[0].pick),
        truncated=g.truncated,
        trimmed_turns=g.trimmed_turns,
        timing=timing(rec),
    )


def refuse_unhonored(extra: dict[str, Any] | None) -> None:
    """400 for a request field this server would not honor; fields that change nothing here pass."""
    for key, value in (extra or {}).items():
        harmless = (
            key in _HARMLESS
            or (key in ("frequency_penalty", "presence_penalty") and value in (None, 0))
            or (key in ("tools", "functions", "logit_bias") and not value)
            or (key == "tool_choice" and value in (None, "none", "auto"))
            or (key == "modalities" and value in (None, ["text"]))
        )
        if not harmless:
            raise Unsupported(f"the field '{key}' is not supported by this server; remove it")


_HARMLESS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key"}


def response_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON Schema a reply must match (checked: a keyword constrained decoding cannot enforce is a 400)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JSON_OBJECT
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise Unsupported("response_format json_schema needs json_schema.schema")
    try:
        check_request_schema(fmt.json_schema.schema_)
    except UnsupportedSchema as e:
        raise Unsupported(f"response_format: {e}") from None
    return fmt.json_schema.schema_


def _choice_options(options: dict[str, Any], i: int) -> dict[str, Any]:
    """Choice i's options: a given seed moves on by i, so that the choices differ."""
    return options | ({"seed": (options["seed"] + i) % 2**32} if i and "seed" in options else {})


async def _collect_all(request: Request, runs: list[tuple[Iterator[Event], Lane]]) -> list[Outcome]:
    """The calls run side by side, each to its end."""
    outcomes = [Outcome(record(request)) for _ in runs]

    async def one(i: int) -> None:
        await collect(request, *runs[i], outcomes[i])

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(runs)):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:  # the first error is the answer (e.g. empty text: 400)
        raise group.exceptions[0] from None
    return outcomes


def logprobs_out(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    """Tokens' logprobs in OpenAI's shape."""
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=e.token,
                logprob=e.logprob if e.logprob is not None else 0.0,
                bytes=list(e.raw or e.token.encode()),
                top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in e.top],
            )
            for e in entries
        ]
    )


def label_logprobs(result: Classification, top: int | None) -> ChoiceLogprobs:
    """A classification as OpenAI logprobs: the label as the one token, every label (or `top` of them) as its
    alternatives, with the label probabilities."""
    ranked = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[: top if top is not None else None]
    lp = {label: math.log(max(p, 1e-300)) for label, p in result.probabilities.items()}
    entry = TokenLogprob(result.label, lp[result.label], tuple((label, lp[label]) for label, _ in ranked))
    return logprobs_out([entry])


def _classification(outcome: Outcome, body: ChatCompletionRequest, envelope: dict[str, Any]) -> ChatCompletion:
    """A classify model's answer: the display line, with the label and probabilities (and as logprobs)."""
    result = outcome.classification
    logprobs = label_logprobs(result, body.top_logprobs) if body.logprobs else None
    return ChatCompletion(
        **envelope,
        choices=[Choice(message=CompletionMessage(content=result.display), finish_reason="stop", logprobs=logprobs)],
        usage=completion_usage(outcome.rec.usage),
        classification=classification_out(result),
        route=pick_out(outcome.pick),
        truncated=result.truncated,
        timing=timing(outcome.rec),
    )


def _chunk(
    envelope: dict[str, Any],
    delta: dict[str, Any],
    finish_reason: str | None = None,
    index: int = 0,
    logprobs: ChoiceLogprobs | None = None,
    **extra: Any,
) -> str:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs.model_dump()
    return sse({**envelope, "object": "chat.completion.chunk", "choices": [choice], **extra})


def _usage_chunk(envelope: dict[str, Any], usage: CompletionUsage) -> str:
    return sse({**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage.model_dump()})


async def _chunks(
    request: Request,
    body: ChatCompletionRequest,
    streams: list[ThreadedStream[Event]],
    first: Event | None,
    envelope: dict[str, Any],
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """The choices' chunks, taking turns (the engine decodes them side by side), then the usage and [DONE]; a
    classify model's answer is one chunk."""
    rec = record(request)
    outcomes = [Outcome(rec) for _ in streams]
    started = [False] * len(streams)  # a reply's first chunk names the role; a classification is one chunk
    try:
        sources = [aclosing(events_of(request, s, first if i == 0 else None)) for i, s in enumerate(streams)]
        iters = [await src.__aenter__() for src in sources]
        try:
            live = list(range(len(streams)))
            while live and not rec.client_gone:
                for i in list(live):
                    event = await anext(iters[i], None)
                    if event is None:
                        live.remove(i)
                        continue
                    outcomes[i].add(event)
                    if isinstance(event, Token):
                        if not started[i]:
                            started[i] = True
                            yield _chunk(envelope, {"role": "assistant", "content": ""}, index=i)
                        logprobs = logprobs_out(event.logprobs) if event.logprobs else None
                        yield _chunk(envelope, {"content": event.text}, index=i, logprobs=logprobs)
        finally:
            for src in sources:
                await src.__aexit__(None, None, None)
    except AllInOneError as e:  # the response has started: the error goes in the stream, as OpenAI does
        rec.status, payload = domain_error(e)
        rec.error = payload["error"]["type"]
        yield sse(payload)
        return
    finally:
        for s in streams:
            await s.aclose()
        for o in outcomes:
            o.close()
    if rec.client_gone or any(o.result is None for o in outcomes):
        return
    for i, o in enumerate(outcomes):
        if isinstance(o.result, Classification):
            out = _classification(o, body, envelope)
            delta = {"role": "assistant", "content": o.result.display}
            classified = out.classification.model_dump() if out.classification else None
            yield _chunk(envelope, delta, "stop", logprobs=out.choices[0].logprobs, classification=classified)
            continue
        g = o.generated
        if not started[i]:
            yield _chunk(envelope, {"role": "assistant", "content": ""}, index=i)
        yield _chunk(envelope, {}, g.finish_reason, index=i, truncated=g.truncated, trimmed_turns=g.trimmed_turns)
    if include_usage:
        yield _usage_chunk(envelope, completion_usage(rec.usage))
    yield sse("[DONE]")
