"""`create_app(settings)`: the FastAPI app holding one model that serves every task."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from ..logs import RequestLog
from ..service import TaskService
from ..sessions import open_store
from ..settings import Settings
from . import completions, endpoints, errors, openai_compat
from .metrics import ServiceMetrics
from .middleware import ApiKeys, BodyLimit, HostCheck, Observe, allowed_hosts
from .schemas import ErrorOut
from .state import Services

STATIC = Path(__file__).parent / "static"
DRAIN_STEP_SECONDS = 30.0  # at shutdown, the longest wait for a cut request's model step to end
log = logging.getLogger("allinone.server")

DESCRIPTION = """\
One small local LLM, loaded once, serving every prompt-defined task.

* **Tasks**: `POST /v1/tasks/{name}` runs any task (`GET /v1/tasks` lists them).
* **Original service**: `POST /analyze` and `POST /chat`, unchanged for existing clients.
* **Combined flow**: `POST /v1/analyze_and_reply`, the sentiment line then the reply (streamable).
* **OpenAI-compatible**: `POST /v1/chat/completions` and `GET /v1/models`; every task is a model
  `allinone-<task>`.
* Errors are JSON: `{"error": {"type", "message", "message_zh"}}`; empty text is 400, an unknown task 404,
  a malformed body 422, an over-large body 413.
* Streams are server-sent events; generation stops when the client disconnects.
"""


def _version() -> str:
    try:
        return version("qwen-allinone")
    except PackageNotFoundError:
        return "0"


def open_paths() -> set[str]:
    """What needs no API key: the page and its own files (it asks for the key), and /health."""
    return {"/", "/health", "/favicon.ico", *(f"/static/{p.name}" for p in STATIC.iterdir() if p.is_file())}


def create_app(settings: Settings | None = None, service: TaskService | None = None) -> FastAPI:
    """The app; the model is loaded at startup (or taken from an injected `service`)."""
    settings = settings or Settings()
    owns_engine = service is None or not service.loaded
    service = service or TaskService(settings)
    shared = Services(settings, service, open_store(settings), ServiceMetrics(), RequestLog(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start = time.perf_counter()
        shared.warming = True
        engine = await run_in_threadpool(lambda: shared.service.engine)  # load once, off the event loop
        await run_in_threadpool(shared.service.warm)  # every task's prefix: the first requests are not slower
        shared.warming = False
        shared.metrics.model_loaded = 1
        log.info("model %s ready in %.1f s (tasks warm)", engine.info.model, time.perf_counter() - start)
        try:
            yield
        finally:  # uvicorn has drained (or cut) the requests in flight; their model steps may still be ending
            shared.metrics.model_loaded = 0
            idle = await shared.admission.drain(DRAIN_STEP_SECONDS)
            if idle:  # nothing can write to the store or use the engine any more
                shared.sessions.close()
                if owns_engine:
                    engine.close()
                shared.admission.undrain()  # an app started again (tests) finds the model free
            else:
                log.error("a model call was still running at shutdown; the session store was left open")
            shared.log.close()

    app = FastAPIOffline(  # /docs and /redoc with their scripts served by the app: they work offline
        title="qwen-allinone",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={422: {"model": ErrorOut, "description": "Malformed JSON or invalid fields"}},
    )
    app.state.services = shared
    errors.install(app)
    app.include_router(endpoints.api)
    app.include_router(openai_compat.api)
    app.include_router(completions.api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeys, keys=settings.api_keys, open_paths=open_paths())
    if settings.cors_origins:  # outside ApiKeys: preflight requests carry no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(HostCheck, hosts=allowed_hosts(settings))
    app.add_middleware(Observe, log=shared.log, metrics=shared.metrics)  # outermost: sees the 413s too
    return app
