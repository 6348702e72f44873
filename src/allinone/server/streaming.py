"""Driving the engine's blocking generators from async routes, and server-sent events.

A stream holds one of the engine's slots, so a stream the client abandons must be closed at once: each step
runs in a worker thread, the client is checked between steps, and the generator is closed (in a thread,
shielded from cancellation) whatever ends the response.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Generic, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from .admission import Admission, Lane

T = TypeVar("T")


class _End:
    pass


class ClientStalled(Exception):
    """A streaming client stopped reading and the request's deadline passed while a write waited."""


END = _End()


class ThreadedStream(Generic[T]):
    """A blocking iterator stepped in worker threads; `aclose` waits for a running step, then closes it.

    With a `slot`, the first step waits (without a thread) for a slot of its lane and `aclose` gives it back, so
    requests queue for the model in the event loop rather than as worker threads blocked in the engine. An
    item with a `next_lane` (a classification before a reply) moves the rest to that lane: the slot is given
    back and one of the other lane taken before the next step. Past the `deadline` the stream is closed
    (freeing the model) and ends, `timed_out` set.
    """

    def __init__(
        self,
        iterator: Iterator[T],
        slot: Admission | None = None,
        deadline: float | None = None,
        again: bool = False,
        lane: Lane = "generate",
    ) -> None:
        self._it = iterator
        self._lane = lane
        self.deadline = deadline
        self._lock = threading.Lock()  # one step or close at a time, from whichever thread
        self._slot = slot
        self._deadline = deadline
        self._again = again  # the request already had the slot once (Admission.acquire)
        self._held = False
        self._next_lane: Lane | None = None
        self.closed = False
        self.timed_out = False

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
        if self._slot is not None and self._next_lane not in (None, self._lane) and self._held:
            self._slot.release(self._lane)  # the rest runs on another lane: queue for it like any request
            self._held, self._lane, self._again = False, self._next_lane, True
        self._next_lane = None
        if self._slot is not None and not self._held and not self.closed:
            await self._slot.acquire(self._lane, self._deadline, self._again)
            self._held = True
        if self._slot is not None and not self.closed and self._slot.expired(self._deadline):
            self.timed_out = True
            await self.aclose()
            return END
        item = await anyio.to_thread.run_sync(self._step)
        self._next_lane = getattr(item, "next_lane", None)
        return item

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._close)
            finally:
                if self._held and self._slot is not None:
                    self._held = False
                    self._slot.release(self._lane)


async def follow(request: Request, stream: ThreadedStream[T]) -> AsyncGenerator[T, None]:
    """The stream's items until it ends or the client disconnects (the record then says so)."""
    try:
        while True:
            item = await stream.next()
            if isinstance(item, _End):
                record = getattr(request.state, "record", None)
                if stream.timed_out and record is not None:
                    record.error = "timeout"  # a started stream can only end early
                return
            yield item
            if await request.is_disconnected():
                record = getattr(request.state, "record", None)
                if record is not None:
                    record.client_gone = True
                return
    finally:
        await stream.aclose()


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event; `data` is JSON-encoded unless it is a str."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that always closes its body and then `stream`, however the response
    ends (even when the client leaves before the body has started).

    The request's deadline holds for writes too: a client that stops reading blocks the response in `send`
    once the socket buffers are full, and past the deadline the response is cut, freeing the model's slot."""

    def __init__(
        self, body: AsyncGenerator[str, None], stream: ThreadedStream[Any] | list[ThreadedStream[Any]] | None = None
    ) -> None:
        super().__init__(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._body = body
        self._streams = stream if isinstance(stream, list) else [] if stream is None else [stream]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = self._streams[0].deadline if self._streams else None

        async def send_by_deadline(message: Message) -> None:
            if deadline is None:
                await send(message)
                return
            with anyio.move_on_after(max(deadline - time.perf_counter(), 0)) as waited:
                await send(message)
            if waited.cancelled_caught:
                record = scope.get("state", {}).get("record")
                if record is not None:
                    record.error = "timeout"
                raise ClientStalled("the client stopped reading the stream until the request's deadline")

        try:
            await super().__call__(scope, receive, send_by_deadline)
        except ClientStalled:
            pass  # the connection is dropped: the response was never completed
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()
                for stream in self._streams:
                    await stream.aclose()
