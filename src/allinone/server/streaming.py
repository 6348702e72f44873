"""Driving the engine's blocking generators from async routes, and server-sent events.

The engine holds its lock for a whole stream, so a stream the client abandons must be closed at once:
each step runs in a worker thread, the client is checked between steps, and the generator is closed
(in a thread, shielded from cancellation) whatever ends the response.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Generic, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class _End:
    pass


END = _End()


class ThreadedStream(Generic[T]):
    """A blocking iterator stepped in worker threads; `aclose` waits for a running step, then closes it."""

    def __init__(self, iterator: Iterator[T]) -> None:
        self._it = iterator
        self._lock = threading.Lock()  # one step or close at a time, from whichever thread
        self.closed = False

    def _step(self) -> T | _End:
        with self._lock:
            return END if self.closed else next(self._it, END)

    def _close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                close = getattr(self._it, "close", None)
                if close is not None:
                    close()

    async def next(self) -> T | _End:
        return await anyio.to_thread.run_sync(self._step)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)


async def follow(request: Request, stream: ThreadedStream[T]) -> AsyncGenerator[T, None]:
    """The stream's items until it ends or the client disconnects (then the record says 499)."""
    try:
        while True:
            item = await stream.next()
            if isinstance(item, _End):
                return
            yield item
            if await request.is_disconnected():
                record = getattr(request.state, "record", None)
                if record is not None:
                    record.status = 499  # client closed the request
                return
    finally:
        await stream.aclose()


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event; `data` is JSON-encoded unless it is a str."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that always closes its body iterator, however the response ends."""

    def __init__(self, body: AsyncGenerator[str, None]) -> None:
        super().__init__(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
