"""OpenAI-compatible routes: every task is a model `allinone-<task>` on /v1/chat/completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request

from ..chat import split_messages
from ..classify import Classification as ClassifyResult
from ..engines.base import Message, Usage
from ..errors import AllInOneError, InvalidInput, TaskNotFound
from ..routing import AUTO
from .calls import Reply, classify, items_of, join, note, parsed, require_text, route, route_out, start_stream, timing
from .errors import domain_error
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Classification,
    CompletionMessage,
    CompletionUsage,
    ErrorOut,
    ModelCard,
    ModelList,
    OpenAIMessage,
    PromptTokensDetails,
)
from .state import Services, record, services
from .streaming import EventStream, ThreadedStream, sse

router = APIRouter(tags=["OpenAI-compatible"])

PREFIX = "allinone-"
_CREATED = int(time.time())
_ERRORS: dict[int | str, dict[str, Any]] = {
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
    if name == AUTO or name in svc.router.tasks:
        return name
    if model in svc.router.tasks:
        return model
    known = ", ".join(PREFIX + t for t in sorted(svc.router.tasks))
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


def classification(result: ClassifyResult) -> Classification:
    return Classification(
        label=result.label, display=result.display, probabilities=result.probabilities, scoring=result.scoring
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Every task as a model id, `allinone-<task>`, and `allinone-auto`, which lets the model pick the task."""
    tasks = services(request).router.tasks.values()
    cards = [
        ModelCard(
            id=PREFIX + t.name, created=_CREATED, task=t.name, kind=t.kind, description=" ".join(t.description.split())
        )
        for t in tasks
    ]
    auto = "The model picks the task for the last user message. 由模型为消息选择任务。"
    cards.append(ModelCard(id=PREFIX + AUTO, created=_CREATED, task=AUTO, kind="auto", description=auto))
    return ModelList(data=cards)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {"example": _SSE_EXAMPLE}}}},
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    """Chat completions for any task. Generate tasks reply to the conversation (a system message replaces
    the task's prompt); classify tasks classify the last user message and answer with the display line,
    the label and probabilities in `classification`. `stream: true` sends chunks, then `[DONE]`."""
    svc = services(request)
    name = task_for(body.model, svc)
    messages = to_messages(body.messages)
    text = split_messages(messages)[2]
    found = await route(request, text) if name == AUTO else None
    name = found.task if found else name
    note(request, name, text)
    require_text(text)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if svc.router.task(name).kind == "classify":
        result = await classify(request, name, text)
        out = ChatCompletion(
            **head,
            choices=[Choice(message=CompletionMessage(content=result.display), finish_reason="stop")],
            usage=completion_usage(result.usage),
            classification=classification(result),
            route=route_out(found),
            truncated=result.truncated,
            timing=timing(record(request)),
        )
        return EventStream(_classify_chunks(out, include_usage)) if body.stream else out
    items = svc.router.stream_messages(name, messages, body.options())
    if body.stream:
        stream, first = await start_stream(request, items)
        return EventStream(_chunks(request, stream, first, head, include_usage), stream)
    reply = await join(request, items)
    rec = record(request)
    return ChatCompletion(
        **head,
        choices=[Choice(message=CompletionMessage(content=reply.text), finish_reason=reply.finish_reason)],
        usage=completion_usage(rec.usage),
        data=parsed(svc.router.task(name), reply.text, reply.finish_reason),
        route=route_out(found),
        truncated=reply.truncated,
        trimmed_turns=reply.trimmed_turns,
        timing=timing(rec),
    )


def _chunk(head: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return sse({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})


def _usage_chunk(head: dict[str, Any], usage: CompletionUsage) -> str:
    return sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage.model_dump()})


async def _classify_chunks(out: ChatCompletion, include_usage: bool) -> AsyncGenerator[str, None]:
    head = {"id": out.id, "created": out.created, "model": out.model}
    extra = {"classification": out.classification.model_dump() if out.classification else None}
    yield _chunk(head, {"role": "assistant", "content": out.choices[0].message.content}, "stop", **extra)
    if include_usage:
        yield _usage_chunk(head, out.usage)
    yield sse("[DONE]")


async def _chunks(
    request: Request, stream: ThreadedStream[Any], first: Any, head: dict[str, Any], include_usage: bool
) -> AsyncGenerator[str, None]:
    rec = record(request)
    reply = Reply(rec)
    try:
        yield _chunk(head, {"role": "assistant", "content": ""})
        async with aclosing(items_of(request, stream, first)) as items:
            async for item in items:
                reply.add(item)
                if item.text:
                    yield _chunk(head, {"content": item.text})
    except AllInOneError as e:  # the response has started: the error goes in the stream, as OpenAI does
        rec.status, payload = domain_error(e)
        rec.error = payload["error"]["type"]
        yield sse(payload)
        return
    finally:
        await stream.aclose()
        reply.close()
    if rec.client_gone:
        return
    yield _chunk(head, {}, reply.finish_reason, truncated=reply.truncated, trimmed_turns=reply.trimmed_turns)
    if include_usage:
        yield _usage_chunk(head, completion_usage(rec.usage))
    yield sse("[DONE]")
