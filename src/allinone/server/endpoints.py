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
from ..chat import ChatSession
from ..classify import Classification
from ..errors import AllInOneError, SessionNotFound
from ..events import Classified, Event, TaskCall, Token
from . import metrics as metrics_module
from .calls import Outcome, collect, events_of, note, open_session, pick_out, run_call, start, timing, usage_out
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
    request: Request, stream: ThreadedStream[Event], first: Event | None, done: dict[str, Any]
) -> EventStream:
    """SSE from a call's events: a classify task's one `result`; else the combined flow's `sentiment` (as soon
    as it is known), `token`s, then `done` with the totals (and a structured task's `data`); or `error`."""
    svc, rec = services(request), record(request)
    outcome = Outcome(rec)

    async def body() -> AsyncGenerator[str, None]:
        try:
            async with aclosing(events_of(request, stream, first)) as events:
                async for event in events:
                    outcome.add(event)
                    if isinstance(event, Classified) and event.next_lane is not None:
                        yield sse(sentiment_out(event.result, svc).model_dump(), "sentiment")
                    elif isinstance(event, Token) and event.text:
                        yield sse({"text": event.text}, "token")
            if rec.client_gone or outcome.result is None:
                return
        except AllInOneError as e:  # the response has started: the error becomes an event
            rec.status, payload = domain_error(e)
            rec.error = payload["error"]["type"]
            yield sse(payload, "error")
            return
        finally:
            await stream.aclose()
            outcome.close()
        if isinstance(outcome.result, Classification):
            yield sse(classify_response(outcome).model_dump(), "result")
            return
        g = outcome.generated
        end = {"reply": g.text, "finish_reason": g.finish_reason, **done, "data": g.data}
        end |= {"truncated": g.truncated, "trimmed_turns": g.trimmed_turns, "route": _route(outcome)}
        end |= {"usage": usage_out(rec.usage).model_dump(), "timing": timing(rec, outcome.sentiment_ms).model_dump()}
        yield sse(end, "done")

    return EventStream(body(), stream)


def _route(outcome: Outcome) -> dict[str, Any] | None:
    picked = pick_out(outcome.pick)
    return picked.model_dump() if picked else None


def classify_response(outcome: Outcome) -> ClassifyResponse:
    result, rec = outcome.classification, outcome.rec
    return ClassifyResponse(
        task=result.task,
        label=result.label,
        display=result.display,
        probabilities=result.probabilities,
        truncated=result.truncated,
        scoring=result.scoring,
        route=pick_out(outcome.pick),
        usage=usage_out(rec.usage),
        timing=timing(rec),
    )


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
    """Prometheus text: requests, latency histograms and tokens per task, cache-hit tokens, in-flight requests,
    and the model's work (steps, busy seconds) once it is loaded."""
    svc = services(request)
    busy = svc.service.engine.busy() if svc.service.loaded else None
    return PlainTextResponse(svc.metrics.render(busy), media_type=metrics_module.CONTENT_TYPE)


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
    svc = services(request)
    messages = [m.message() for m in body.messages] if body.messages else None
    text = messages[-1].content if messages else (body.text or "")
    note(request, name, text)
    multi_turn = name == AUTO or svc.service.task(name).multi_turn
    session = await open_session(request, body.session_id) if body.session_id and multi_turn else None
    call = TaskCall(name, text, messages, {**body.options(), **(body.model_extra or {})}, session)
    events, lane = run_call(request, call)
    session_id = session.id if session else None
    if body.stream:
        stream, first = await start(request, events, lane)
        return event_stream(request, stream, first, {"task": name, "session_id": session_id})
    outcome = await collect(request, events, lane)
    if isinstance(outcome.result, Classification):
        return classify_response(outcome)
    g, rec = outcome.generated, outcome.rec
    return GenerateResponse(
        task=g.task,
        text=g.text,
        finish_reason=g.finish_reason,
        session_id=session_id if session_id and svc.service.task(g.task).multi_turn else None,
        data=g.data,
        route=pick_out(outcome.pick),
        truncated=g.truncated,
        trimmed_turns=g.trimmed_turns,
        usage=usage_out(rec.usage),
        timing=timing(rec),
    )


@api.post("/analyze", response_model=AnalyzeResponse, responses=_ERRORS, tags=["original service"])
async def analyze(body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
    """The original service's sentiment route: `{"text"}` -> `{"sentiment": "正面" | "负面", ...}`."""
    note(request, "sentiment", body.text)
    outcome = await collect(request, *run_call(request, TaskCall("sentiment", body.text)))
    s = sentiment_out(outcome.classification, services(request))
    return AnalyzeResponse(**s.model_dump(), timing=timing(outcome.rec))


@api.post("/chat", response_model=ChatResponse, responses=_ERRORS, tags=["original service"])
async def chat(body: ChatRequest, request: Request) -> ChatResponse:
    """The original service's chat route: `{"text", "session_id"?}` -> `{"reply", "session_id", ...}`."""
    rec = note(request, "chat", body.text)
    session = await open_session(request, body.session_id)
    outcome = await collect(request, *run_call(request, TaskCall("chat", body.text, session=session)))
    g = outcome.generated
    return ChatResponse(
        reply=g.text,
        session_id=session.id,
        truncated=g.truncated,
        trimmed_turns=g.trimmed_turns,
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
    With `stream: true`: SSE `sentiment` (as soon as it is known), then `token` events, then `done`.
    The sentiment runs on the classification lane: it never waits behind other users' replies."""
    rec = note(request, "chat", body.text)
    rec.task = "analyze_and_reply"
    session = await open_session(request, body.session_id)
    call = TaskCall("chat", body.text, options=body.options(), session=session, sentiment="sentiment")
    events, lane = run_call(request, call)
    if body.stream:
        stream, first = await start(request, events, lane)
        return event_stream(request, stream, first, {"session_id": session.id})
    outcome = await collect(request, events, lane)
    g = outcome.generated
    assert outcome.sentiment is not None
    return AnalyzeAndReplyResponse(
        sentiment=sentiment_out(outcome.sentiment, services(request)),
        reply=g.text,
        finish_reason=g.finish_reason,
        session_id=session.id,
        trimmed_turns=g.trimmed_turns,
        usage=usage_out(rec.usage),
        timing=timing(rec, outcome.sentiment_ms),
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
