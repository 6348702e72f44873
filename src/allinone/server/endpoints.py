"""The service's own endpoints: tasks, the original /analyze and /chat, the combined flow, sessions, health."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..auto import AUTO
from ..chat import ChatSession, split_messages
from ..classify import Classification
from ..errors import AllInOneError, SessionNotFound
from ..tasks import Task
from . import metrics as metrics_module
from .calls import (
    Reply,
    classify,
    items_of,
    join,
    note,
    open_session,
    parsed,
    pick_out,
    pick_task,
    require_text,
    start_stream,
    timing,
    usage_out,
)
from .errors import domain_error
from .schemas import (
    AnalyzeAndReplyRequest,
    AnalyzeAndReplyResponse,
    AnalyzeRequest,
    AnalyzeResponse,
    ChatRequest,
    ChatResponse,
    ClassifyResponse,
    ErrorOut,
    GenerateResponse,
    HealthOut,
    Sentiment,
    SessionOut,
    TaskInfo,
    TaskRequest,
    TaskResponse,
    TurnOut,
)
from .state import Services, owner, record, services
from .streaming import EventStream, ThreadedStream, sse

api = APIRouter()

INDEX = Path(__file__).parent / "static" / "index.html"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Empty text or an unusable option"},
    404: {"model": ErrorOut, "description": "Unknown task or session"},
    413: {"model": ErrorOut, "description": "Body or prompt too large"},
}
_SSE_EXAMPLE = (
    'event: sentiment\ndata: {"sentiment": "负面", "label": "negative", "display": "😡 LLM 情感判断: 负面", ...}\n\n'
    'event: token\ndata: {"text": "辛苦"}\n\n'
    'event: done\ndata: {"reply": "辛苦了……", "finish_reason": "stop", "session_id": "…", "usage": {…}, '
    '"timing": {…}}\n\n'
)
_STREAMS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"example": _SSE_EXAMPLE}}, "description": "JSON, or SSE"}
}


def sentiment_out(result: Classification, svc: Services) -> Sentiment:
    label = svc.service.task(result.task).label(result.label)
    return Sentiment(
        sentiment=label.display,
        label=result.label,
        display=result.display,
        probabilities=result.probabilities,
        truncated=result.truncated,
        usage=usage_out(result.usage),
    )


def event_stream(
    request: Request,
    stream: ThreadedStream[Any],
    first: Any,
    done: dict[str, Any],
    task: Task | None = None,
    sentiment: Classification | None = None,
) -> EventStream:
    """SSE: `sentiment` (the combined flow's, sent at once), `token`s, then `done` with the totals (and a
    structured task's `data`), or `error`."""
    svc, rec = services(request), record(request)
    reply = Reply(rec)

    async def body() -> AsyncGenerator[str, None]:
        try:
            if sentiment is not None:
                reply.classified(sentiment)
                yield sse(sentiment_out(sentiment, svc).model_dump(), "sentiment")
            async with aclosing(items_of(request, stream, first)) as all_items:
                async for item in all_items:
                    reply.add(item)
                    if item.text:
                        yield sse({"text": item.text}, "token")
            if rec.client_gone:
                return
            end = {"reply": reply.text, "finish_reason": reply.finish_reason, **done}
            end |= {"truncated": reply.truncated, "trimmed_turns": reply.trimmed_turns}
            if task is not None and task.output_schema is not None:
                end["data"] = parsed(task, reply.text, reply.finish_reason)
        except AllInOneError as e:  # the response has started: the error becomes an event
            rec.status, payload = domain_error(e)
            rec.error = payload["error"]["type"]
            yield sse(payload, "error")
            return
        finally:
            await stream.aclose()
            reply.close()
        end |= {"usage": usage_out(rec.usage).model_dump(), "timing": timing(rec, reply.sentiment_ms).model_dump()}
        yield sse(end, "done")

    return EventStream(body(), stream)


# --- endpoints -------------------------------------------------------------------------------------


@api.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(INDEX, media_type="text/html; charset=utf-8")


@api.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}}, tags=["service"])
async def health(request: Request) -> Any:
    """Ready (200) once the model is loaded and the tasks' prefixes computed; 503 before."""
    svc = services(request)
    if not svc.ready():
        return JSONResponse(HealthOut(status="loading", ready=False).model_dump(), status_code=503)
    info = svc.service.engine.info
    return HealthOut(status="ok", ready=True, model=info.model, backend=info.backend, tasks=task_infos(svc))


@api.get("/metrics", response_class=PlainTextResponse, tags=["service"])
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text: requests, latency histograms and tokens per task, cache-hit tokens, in-flight requests."""
    return PlainTextResponse(services(request).metrics.render(), media_type=metrics_module.CONTENT_TYPE)


def task_infos(svc: Services) -> list[TaskInfo]:
    return [
        TaskInfo(
            name=t.name,
            kind=t.kind,
            description=" ".join(t.description.split()),
            model_id=f"allinone-{t.name}",
            labels=[label.id for label in t.labels] if t.labels else None,
        )
        for t in svc.service.tasks.values()
    ]


@api.get("/v1/tasks", response_model=list[TaskInfo], tags=["tasks"])
async def list_tasks(request: Request) -> list[TaskInfo]:
    """Every task the model serves."""
    return task_infos(services(request))


@api.post(
    "/v1/tasks/{name}",
    response_model=TaskResponse,
    responses={**_ERRORS, **_STREAMS},
    tags=["tasks"],
)
async def run_task(name: str, body: TaskRequest, request: Request) -> Any:
    """Run any task, or `auto` to let the model pick it. Classify tasks return the label, display line and
    probabilities; generate tasks return text (and `data` when they declare an output_schema), with
    `stream: true` as server-sent events. Options override the task's defaults."""
    svc, rec = services(request), record(request)
    messages = [m.message() for m in body.messages] if body.messages else None
    text = split_messages(messages)[2] if messages else (body.text or "")
    found = await pick_task(request, text) if name == AUTO else None
    name = found.task if found else name
    task = svc.service.task(name)
    if task.kind == "classify":
        result = await classify(request, name, text, body.model_extra)  # generation overrides do not apply
        out = ClassifyResponse(
            task=name,
            label=result.label,
            display=result.display,
            probabilities=result.probabilities,
            truncated=result.truncated,
            scoring=result.scoring,
            route=pick_out(found),
            usage=usage_out(rec.usage),
            timing=timing(rec),
        )
        return EventStream(_one_event(out.model_dump(), "result")) if body.stream else out
    note(request, name, text)
    require_text(text)
    session = await open_session(request, body.session_id) if body.session_id and task.multi_turn else None
    if messages:
        items = svc.service.stream_messages(name, messages, body.options())
    else:
        items = svc.service.stream(name, text, session, body.options())
    session_id = session.id if session else None
    if body.stream:
        stream, first = await start_stream(request, items)
        routed = pick_out(found)
        done = {"task": name, "session_id": session_id, "route": routed.model_dump() if routed else None}
        return event_stream(request, stream, first, done, task)
    reply = await join(request, items)
    return GenerateResponse(
        task=name,
        text=reply.text,
        finish_reason=reply.finish_reason,
        session_id=session_id,
        data=parsed(task, reply.text, reply.finish_reason),
        route=pick_out(found),
        truncated=reply.truncated,
        trimmed_turns=reply.trimmed_turns,
        usage=usage_out(rec.usage),
        timing=timing(rec),
    )


async def _one_event(data: dict[str, Any], event: str) -> AsyncGenerator[str, None]:
    yield sse(data, event)


@api.post("/analyze", response_model=AnalyzeResponse, responses=_ERRORS, tags=["original service"])
async def analyze(body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
    """The original service's sentiment route: `{"text"}` -> `{"sentiment": "正面" | "负面", ...}`."""
    svc = services(request)
    result = await classify(request, "sentiment", body.text)
    s = sentiment_out(result, svc)
    return AnalyzeResponse(**s.model_dump(), timing=timing(record(request)))


@api.post("/chat", response_model=ChatResponse, responses=_ERRORS, tags=["original service"])
async def chat(body: ChatRequest, request: Request) -> ChatResponse:
    """The original service's chat route: `{"text", "session_id"?}` -> `{"reply", "session_id", ...}`."""
    svc, rec = services(request), note(request, "chat", body.text)
    text = require_text(body.text)
    session = await open_session(request, body.session_id)
    reply = await join(request, svc.service.stream("chat", text, session))
    return ChatResponse(
        reply=reply.text,
        session_id=session.id,
        truncated=reply.truncated,
        trimmed_turns=reply.trimmed_turns,
        usage=usage_out(rec.usage),
        timing=timing(rec),
    )


@api.post(
    "/v1/analyze_and_reply",
    response_model=AnalyzeAndReplyResponse,
    responses={**_ERRORS, **_STREAMS},
    tags=["combined"],
)
async def analyze_and_reply(body: AnalyzeAndReplyRequest, request: Request) -> Any:
    """The sentiment line first, then the assistant's reply that knows it, in the same session.
    With `stream: true`: SSE `sentiment` (as soon as it is known), then `token` events, then `done`."""
    svc, rec = services(request), note(request, "chat", body.text)
    text = require_text(body.text)
    task, params, _ = svc.service.prepare("chat", text, body.options())
    session = await open_session(request, body.session_id)
    result = await classify(request, "sentiment", text)  # its own lane: never behind other users' replies
    rec.task = "analyze_and_reply"
    items = svc.service.reply(task, params, text, session, svc.service.sentiment_tag(result))
    if body.stream:  # the reply waits for a generation slot inside the stream, after the sentiment event
        admission = svc.admission
        stream = ThreadedStream(items, admission, admission.deadline(rec))
        return event_stream(request, stream, None, {"session_id": session.id}, sentiment=result)
    first = Reply(rec)
    first.classified(result)
    reply = await join(request, items, first)
    return AnalyzeAndReplyResponse(
        sentiment=sentiment_out(result, svc),
        reply=reply.text,
        finish_reason=reply.finish_reason,
        session_id=session.id,
        trimmed_turns=reply.trimmed_turns,
        usage=usage_out(rec.usage),
        timing=timing(rec, reply.sentiment_ms),
    )


def session_out(session: ChatSession) -> SessionOut:
    turns = [TurnOut(role=t.role, content=t.content, sentiment=t.sentiment) for t in session.turns]
    return SessionOut(session_id=session.id, turns=turns)


@api.get("/v1/sessions/{session_id}", response_model=SessionOut, responses=_ERRORS, tags=["sessions"])
async def get_session(session_id: str, request: Request) -> SessionOut:
    """A session's conversation so far; only the API key that made the session sees it (others get 404)."""
    found = await run_in_threadpool(services(request).sessions.get, session_id, owner(request))
    return session_out(found)


@api.delete("/v1/sessions/{session_id}", status_code=204, responses=_ERRORS, tags=["sessions"])
async def delete_session(session_id: str, request: Request) -> Response:
    """Forget a session (the page's reset button); 404 when there is none of the caller's with this id."""
    if not await run_in_threadpool(services(request).sessions.delete, session_id, owner(request)):
        raise SessionNotFound(f"unknown session '{session_id}'")
    return Response(status_code=204)
